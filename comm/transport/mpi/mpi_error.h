// Private: turns an MPI return code into a CommError. switchyard's communicators use
// MPI_ERRORS_RETURN, so a failed MPI call surfaces as an exception instead of aborting the job.
#pragma once

#include <mpi.h>

#include <string_view>

namespace switchyard::comm {

// Throws CommError(internal) naming `what` and MPI's own description when rc != MPI_SUCCESS.
void check_mpi(int rc, std::string_view what);

// Duplicates comm with MPI_ERRORS_RETURN set on the copy.
MPI_Comm dup_with_error_return(MPI_Comm comm);

}  // namespace switchyard::comm
