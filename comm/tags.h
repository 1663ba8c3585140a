// Every message tag switchyard's point-to-point traffic uses, in one place, so that no two kinds of
// message can share one by accident. Messages between one pair of ranks with one tag arrive in the
// order they were posted (Transport); distinct tags per round keep a fast rank's next round from
// matching a slow rank's current one. Values are what they have always been: peers of one job all
// run the same build, but the numbers appear in traces and debugger sessions.
#pragma once

namespace switchyard::comm {

// ---- flat all-to-all (comm/alltoall/flat/flat_alltoall.cpp) -----------------------------------
// Counts exchange: how many rows each rank sends each other rank.
constexpr int kCountsTag = 1;
// Dispatch: token rows (and their side data) to the ranks that serve their experts.
constexpr int kDispatchTag = 2;
// Combine: each served row's result back to the rank that owns the token.
constexpr int kCombineTag = 3;

// ---- hierarchical all-to-all (comm/alltoall/hierarchical/) --------------------------------------
// Counts exchange, first round: each source's per-node header to the relay of that node.
constexpr int kHeaderTag = 11;
// Counts exchange, second round: the distinct-token index of each source's rows for a node.
constexpr int kIndexTag = 12;
// Counts exchange, third round: rows per (source, rank of the node), relay to its node's ranks.
constexpr int kRelayCountsTag = 13;
// Dispatch: a source's distinct tokens (in chunks) across to the relay of another node.
constexpr int kDispatchAcrossTag = 14;
// Dispatch: a relay forwards rows inside its node (and a source to its own node's ranks).
constexpr int kDispatchInsideTag = 15;
// Combine: results inside a node, from the ranks that served them to the relay.
constexpr int kCombineInsideTag = 16;
// Combine: each node's per-token sums back across to the source rank.
constexpr int kCombineAcrossTag = 17;

// ---- runtime (runtime/) -------------------------------------------------------------------------
// Gradients of replicated experts summed between the ranks that hold a replica
// (runtime/moe_layer_replicas.cpp).
constexpr int kReplicaGradTag = 64;
// Expert parameters and optimiser state moved when the placement changes
// (runtime/moe_layer_migration.cpp).
constexpr int kMigrationTag = 65;
// Trace clock alignment: rank 0's ping and each rank's reply (runtime/trace.cpp).
constexpr int kClockTag = 66;
// Trace gathering: each rank's events sent to rank 0 (runtime/trace.cpp).
constexpr int kGatherTag = 67;

// ---- communicator (comm/communicator.cpp) -------------------------------------------------------
// Store mode's all-reduce and barrier messages (no MPI: they travel over the transport).
constexpr int kCollectiveTag = 0x5359;
// The roll call after a collective timed out (Communicator::silent_ranks).
constexpr int kRollCallTag = 0x535A;

}  // namespace switchyard::comm
