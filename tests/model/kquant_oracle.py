"""llama.cpp's own quantizer as the oracle for omnikv's K-quant quantizers, for
tests/model/test_kquant_llamacpp.sh: quantizes an F32 GGUF with llama_cpp.llama_model_quantize
(pure: every 2-D tensor in the file type's base type; no importance matrix, so llama.cpp runs its
reference quantizers) and compares every tensor's type and bytes with the file omnikv's gen-model
wrote from the same weights.

usage: kquant_oracle.py F32.gguf OURS.gguf LLAMA_FTYPE OUT.gguf
Prints one line per tensor; exit status 1 on any difference."""
import ctypes
import sys

import llama_cpp
import numpy as np
from gguf import GGUFReader


def main():
    src, ours, ftype, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True
    p.pure = True
    if llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p)) != 0:
        print(f"llama_model_quantize to file type {ftype} failed")
        return 1
    theirs = {t.name: t for t in GGUFReader(out).tensors}
    mine = {t.name: t for t in GGUFReader(ours).tensors}
    bad = 0
    for name, a in theirs.items():
        b = mine.get(name)
        if b is None:
            print(f"FAIL {name}: missing from {ours}")
            bad += 1
            continue
        same = a.tensor_type == b.tensor_type and np.array_equal(
            np.asarray(a.data).view(np.uint8).reshape(-1), np.asarray(b.data).view(np.uint8).reshape(-1))
        print(f"{'ok  ' if same else 'FAIL'} {name}: llama.cpp {a.tensor_type.name}, omnikv "
              f"{b.tensor_type.name}, bytes {'identical' if same else 'differ'}")
        bad += not same
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
