"""The gradient all-reduce of replicated parameters, done as DistributedDataParallel does it: the
gradients go into buckets of about 25 MB (DDP's bucket_cap_mb), in reverse parameter order, and
each bucket's all-reduce starts asynchronously as soon as backward has produced all of its
gradients, so that it overlaps the rest of backward; finish() waits and writes the sums back.
switchyard sums the same gradients inside its backward, so the benchmark times this with it."""

import functools

import torch
import torch.distributed as dist

BUCKET_BYTES = 25 * 2**20


class _Bucket:
    def __init__(self, params):
        self.params = params
        self.offsets = [0]
        for p in params:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.buffer = torch.empty(self.offsets[-1], dtype=params[0].dtype)
        self.pending = len(params)
        self.handle = None


class GradAllReduce:
    def __init__(self, params, bucket_bytes=BUCKET_BYTES):
        self.buckets, group, size = [], [], 0
        for p in reversed(params):
            nbytes = p.numel() * p.element_size()
            if group and size + nbytes > bucket_bytes:
                self.buckets.append(_Bucket(group))
                group, size = [], 0
            group.append(p)
            size += nbytes
        if group:
            self.buckets.append(_Bucket(group))
        for bucket in self.buckets:
            for slot, p in enumerate(bucket.params):
                p.register_hook(functools.partial(self._ready, bucket, slot))

    @staticmethod
    def _ready(bucket, slot, grad):
        bucket.buffer[bucket.offsets[slot]:bucket.offsets[slot + 1]].copy_(grad.flatten())
        bucket.pending -= 1
        if bucket.pending == 0:
            bucket.handle = dist.all_reduce(bucket.buffer, async_op=True)

    def finish(self):
        """Waits for every bucket and stores the summed gradients in .grad. Call once after each
        backward; every replicated parameter must have received a gradient."""
        for bucket in self.buckets:
            if bucket.handle is None:
                raise RuntimeError("gradient all-reduce: backward gave no gradient to "
                                   f"{bucket.pending} replicated parameter(s)")
            bucket.handle.wait()
            for slot, p in enumerate(bucket.params):
                view = bucket.buffer[bucket.offsets[slot]:bucket.offsets[slot + 1]]
                p.grad.copy_(view.view_as(p))
            bucket.pending, bucket.handle = len(bucket.params), None
