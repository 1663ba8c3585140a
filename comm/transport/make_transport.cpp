#include "comm/transport/make_transport.h"

#include <fmt/format.h>

#include "comm/error.h"
#include "comm/transport/mpi/mpi_transport.h"
#include "comm/transport/shm/shm_transport.h"
#include "comm/transport/ucx/ucx_transport.h"

namespace switchyard::comm {

std::unique_ptr<Transport> make_transport(std::string_view name, MPI_Comm comm) {
  if (name == "mpi") return std::make_unique<MpiTransport>(comm);
  if (name == "shm") return std::make_unique<ShmTransport>(comm);
  if (name == "ucx") return std::make_unique<UcxTransport>(comm);
  throw CommError(ErrorCode::invalid_argument,
                  fmt::format("unknown transport '{}'; known transports: mpi, shm, ucx", name));
}

}  // namespace switchyard::comm
