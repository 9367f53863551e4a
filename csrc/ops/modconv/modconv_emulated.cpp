// modconv_cuda.cu built by the host compiler against the CUDA emulation
// (common/emulation/emulation.h): the backend that runs the CUDA drivers' own code on the
// CPU. The same source file, not a copy; a build with MEDGAN_FAST_EMULATION=0 leaves it out.
#ifdef MEDGAN_FAST_WITH_EMULATION
#define MEDGAN_FAST_EMULATED
#include "ops/modconv/modconv_cuda.cu"
#endif
