// longtune-run: the torchrun-like launcher. Not built yet: until it is, it refuses to run rather
// than pretending to launch anything, and points to torchrun, which longtune's CLI does not need.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr,
               "longtune-run: the multi-process launcher is not available in this version; run "
               "`longtune` directly (single process).\n");
  return 2;
}
