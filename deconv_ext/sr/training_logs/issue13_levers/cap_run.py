# experiment: FSRCNN of another size under the preset name "fsrcnn", env CAP="d,s,m"
import os, sys
import deconv_ext.sr.model as M
M.PRESETS["fsrcnn"] = tuple(int(v) for v in os.environ["CAP"].split(","))
import deconv_ext.sr.train
from deconv_ext.cli import main
sys.exit(main())
