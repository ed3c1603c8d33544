"""Image statistics of every NIfTI under an input folder, as NPS result metadata.

Runs inside the neuro image: ``python3 /code/image_stats.py /input /output``. Writes
``/output/stats.json`` and ``/output/.nps/metadata.json`` (which NPS indexes, so
``nps search 'metadata.brain_mean:>500'`` finds the result).
"""

import json
import sys
from pathlib import Path

import nibabel
import numpy as np


def stats(path: Path) -> dict[str, object]:
    img = nibabel.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float64)
    brain = data[data > data.mean()]  # crude foreground: voxels brighter than the mean
    return {
        "file": str(path.name),
        "shape": list(data.shape),
        "voxel_mm": [round(float(z), 3) for z in img.header.get_zooms()[:3]],
        "mean": round(float(data.mean()), 3),
        "std": round(float(data.std()), 3),
        "brain_mean": round(float(brain.mean()), 3),
        "brain_voxels": int(brain.size),
        "brain_volume_ml": round(float(brain.size * np.prod(img.header.get_zooms()[:3]) / 1000), 3),
    }


def main(inputs: Path, output: Path) -> int:
    found = sorted(p for p in inputs.rglob("*.nii*") if p.is_file())
    if not found:
        print(f"no NIfTI file under {inputs}", file=sys.stderr)
        return 2
    results = [stats(p) for p in found]
    (output / "stats.json").write_text(json.dumps(results, indent=2))
    (output / ".nps").mkdir(exist_ok=True)
    (output / ".nps" / "metadata.json").write_text(json.dumps(results[0]))
    print(json.dumps(results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
