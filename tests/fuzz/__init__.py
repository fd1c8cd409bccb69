"""A structure-aware fuzz harness for kdnb: mutated copies of the data/ samples, each opened and
exercised through the public entry points in a child process with a time and memory limit.

- `samples`: the sample dumps and their layout (kdump header fields, bitmaps, descriptors,
  VMCOREINFO; an ELF re-encoding of a kdump sample with its program headers and notes).
- `container`: container-level mutators (truncation, header/bitmap/descriptor bit flips and
  field values, ELF program headers and notes, VMCOREINFO values).
- `kernel`: kernel-structure mutators (bytes of kernel objects patched inside pages, written
  back as raw pages).
- `runner`: one case in a child process, outcome classification and de-duplication.
"""
