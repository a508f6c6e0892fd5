# experiment: FSRCNN deconvolution padding p (output_padding 2p+s-9) via env DPAD
import os, sys
import deconv_ext.sr.model as M
from deconv_ext.nn import ConvTranspose2d
orig = M.FSRCNN.__init__
def init(self, scale, *a, **k):
    orig(self, scale, *a, **k)
    p = int(os.environ.get("DPAD", "4"))
    self.deconv = ConvTranspose2d(self.d, 1, 9, stride=scale, padding=p, output_padding=2 * p + scale - 9)
    self.reset_parameters()
M.FSRCNN.__init__ = init
import deconv_ext.sr.train
from deconv_ext.cli import main
sys.exit(main())
