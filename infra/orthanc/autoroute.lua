-- Auto-routing for NPS's Orthanc (infra/lib/orthanc.sh copies this file next to the generated
-- orthanc.json and lists it in "LuaScripts"; restart Orthanc to reload it).
--
-- Every instance Orthanc receives over DICOM (C-STORE) is forwarded to the modality "nps",
-- the NPS DICOM receiver. Orthanc keeps its own copy: it is the lab's PACS.
-- Exception: a sender whose calling AE title is NOROUTE is stored but not forwarded
-- (benchmarks use it to measure Orthanc's own ingest rate).
-- Instances uploaded over REST (or created by Orthanc itself) are not forwarded.
--
-- Orthanc 1.10 calls OnStoredInstance(instanceId, tags, metadata, origin) from its Lua thread,
-- after the C-STORE has been answered; origin is a table such as
--   { RequestOrigin = "DicomProtocol", RemoteAet = "STORESCU", RemoteIp = "127.0.0.1",
--     CalledAet = "ORTHANC" }.
-- SendToModality does not send anything itself: it appends a C-STORE to Orthanc's current
-- "Lua" job, which reuses one association for many instances (closed after
-- DicomAssociationCloseDelay idle seconds). A failed C-STORE (receiver down, rejected) is
-- logged by Orthanc as 'Lua: Unable to send instance ...' and not retried.

local TARGET = 'nps'
local NO_ROUTE_AET = 'NOROUTE'

local function trim(s)
  return (string.gsub(s or '', '^%s*(.-)%s*$', '%1'))
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin == nil or origin['RequestOrigin'] ~= 'DicomProtocol' then
    return
  end
  if string.upper(trim(origin['RemoteAet'])) == NO_ROUTE_AET then
    return
  end
  local ok, err = pcall(SendToModality, instanceId, TARGET)
  if not ok then
    print('autoroute: could not queue instance ' .. instanceId .. ' for modality '
          .. TARGET .. ': ' .. tostring(err))
  end
end
