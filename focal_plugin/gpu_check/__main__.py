"""``python -m focal_plugin.gpu_check --probe-auto DEVICE`` and
``--probe-cliff DEVICE FIRST TIMED``: the fresh-process probes of the ``compile`` section
(the command line of the whole check is ``tools/gpu_check.sh``)."""
import json
import sys

from .runtime import probe_auto, probe_cliff

if len(sys.argv) == 3 and sys.argv[1] == '--probe-auto':
    print(json.dumps(probe_auto(sys.argv[2])))
elif len(sys.argv) == 5 and sys.argv[1] == '--probe-cliff':
    print(json.dumps(probe_cliff(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
else:
    raise SystemExit('usage: bash tools/gpu_check.sh OUT_DIR [options]')
