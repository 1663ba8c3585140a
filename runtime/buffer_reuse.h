// The layer's per-call buffers (received tokens, expert activations, their gradients) reach tens
// of MB at a few thousand tokens per rank. glibc serves allocations above its mmap threshold
// (at most 32 MiB, adjusted as blocks are freed) with a fresh mapping each time, so every call
// page-faults and zeroes them again: measured 25 ms per 40 MB buffer against 2 ms for a reused
// one, and 15-20% of an unchunked layer step at 1024 tokens per rank on 4 ranks. Like the caching
// allocators of PyTorch and TensorFlow, the layer therefore keeps freed memory for reuse.
#pragma once

namespace switchyard {

// Once per process (later calls return the first answer): unless SWITCHYARD_MALLOC_REUSE=0, raises
// glibc's mmap and trim thresholds to 1 GiB, so that freed buffers below that size stay in the
// heap for the next call; the process then keeps up to its peak heap use. Returns whether it did.
// The first MoeLayer constructed calls it. Throws Error(invalid_argument) for a value other than
// 0 or 1.
bool reuse_freed_buffers();

// What reuse_freed_buffers() did, for start-up logs.
const char* buffer_reuse_description();

}  // namespace switchyard
