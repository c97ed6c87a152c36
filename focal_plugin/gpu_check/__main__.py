"""``python -m focal_plugin.gpu_check --probe-auto DEVICE``: the fresh-process probe of the
``compile`` section (the command line of the whole check is ``tools/gpu_check.sh``)."""
import json
import sys

from .runtime import probe_auto

if len(sys.argv) == 3 and sys.argv[1] == '--probe-auto':
    print(json.dumps(probe_auto(sys.argv[2])))
else:
    raise SystemExit('usage: bash tools/gpu_check.sh OUT_DIR [options]')
