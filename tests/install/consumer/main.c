/* Compiled against the installed header and library: the versions must agree. */
#include <stdio.h>

#include "switchyard.h"

int main(void) {
  if (sy_version() != SY_VERSION_CODE) {
    fprintf(stderr, "library version %d, header %d\n", sy_version(), SY_VERSION_CODE);
    return 1;
  }
  printf("switchyard %d.%d.%d: %s\n", SY_VERSION_MAJOR, SY_VERSION_MINOR, SY_VERSION_PATCH,
         sy_status_string(SY_OK));
  return 0;
}
