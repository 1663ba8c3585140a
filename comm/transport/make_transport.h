// The transports by name: the one place that knows every backend folder (mpi/, shm/, ucx/).
#pragma once

#include <mpi.h>

#include <memory>
#include <string_view>

#include "comm/transport/transport.h"

namespace switchyard::comm {

// "mpi": MPI_Isend / MPI_Irecv on a duplicate of comm. "shm": a shared-memory segment per node
// (shm_transport.h), reaching only ranks of this rank's node; collective over comm. Throws
// CommError(invalid_argument) for an unknown name, listing the known ones.
std::unique_ptr<Transport> make_transport(std::string_view name, MPI_Comm comm);

}  // namespace switchyard::comm
