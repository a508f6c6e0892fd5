# Quickstart targets; each works on a fresh machine (installs what it needs first).
#   make demo    upscale the bundled sample with the shipped FSRCNN weights (the main job)
#   make test    the test suite
#   make bench   CPU benchmark against F.conv_transpose2d
# Build switches (USE_CUDA, FORCE_CUDA, TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS) pass through; see setup.py.
PYTHON ?= python3
STAMP := build/.installed

.PHONY: install demo test bench clean
install: $(STAMP)
$(STAMP): setup.py requirements.txt $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .
	mkdir -p build && touch $(STAMP)

demo: install
	mkdir -p demo_out
	$(PYTHON) -m deconv_ext sr upscale -s 2 -o demo_out/side_by_side_x2.png

test: install
	$(PYTHON) -m pytest tests -q

bench: install
	$(PYTHON) -m deconv_ext bench --device cpu

clean:
	rm -rf build dist *.egg-info deconv_ext/*.so demo_out
