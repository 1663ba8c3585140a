#include "comm/transport/mpi/mpi_error.h"

#include <fmt/format.h>

#include "comm/error.h"

namespace switchyard::comm {

void check_mpi(int rc, std::string_view what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw CommError(ErrorCode::internal,
                  fmt::format("{} failed: {} (MPI error {}); a peer may have failed, or MPI is "
                              "misconfigured for this launch",
                              what, std::string_view(text, static_cast<size_t>(length)), rc));
}

MPI_Comm dup_with_error_return(MPI_Comm comm) {
  MPI_Comm copy = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup");
  const int rc = MPI_Comm_set_errhandler(copy, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&copy);
    check_mpi(rc, "MPI_Comm_set_errhandler");
  }
  return copy;
}

}  // namespace switchyard::comm
