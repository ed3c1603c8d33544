/* LD_PRELOAD shim that turns wildcard listening binds into loopback binds.
 *
 * Orthanc 1.10 (Debian 12) has no setting for the address it listens on: its HTTP server
 * (CivetWeb) and its DICOM server (DCMTK) bind 0.0.0.0, and "RemoteAccessAllowed": false only
 * refuses remote HTTP requests after accepting them. infra/lib/orthanc.sh builds this file
 * into $NPS_CACHE/bin/nps-loopback-bind.so and preloads it into Orthanc alone, so both
 * listeners are reachable from this machine only.
 *
 * Only binds to the wildcard address with a non-zero port change: 0.0.0.0 becomes 127.0.0.1,
 * :: becomes ::1 (IPV6_V6ONLY sockets) or ::ffff:127.0.0.1 (dual-stack sockets). Every other
 * bind, including the port-0 binds of outgoing connections, is passed through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn real_bind;
    if (real_bind == NULL) {
        real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
        if (real_bind == NULL) { errno = ENOSYS; return -1; }
    }
    if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY) && a.sin_port != 0) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) && a.sin6_port != 0) {
            int v6only = 0;
            socklen_t optlen = sizeof v6only;
            if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &optlen) != 0) v6only = 0;
            if (v6only) {
                a.sin6_addr = in6addr_loopback;
            } else {
                memset(&a.sin6_addr, 0, sizeof a.sin6_addr);
                a.sin6_addr.s6_addr[10] = 0xff;
                a.sin6_addr.s6_addr[11] = 0xff;
                a.sin6_addr.s6_addr[12] = 127;
                a.sin6_addr.s6_addr[15] = 1;
            }
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
