/* engine.c: the engine as one translation unit, so the compiler can inline the rounding
 * routine into every loop that calls it.  Each file also compiles on its own. */
#include "round.c"
#include "formats.c"
#include "accumulate.c"
#include "kernel_float.c"
#include "array.c"
#include "kernel_fixed.c"
#include "kernel_fixround.c"
#include "kernel_wide.c"
#include "kernel_block.c"
#include "kernel_gemm.c"
#include "blockscale.c"
#include "metrics.c"
