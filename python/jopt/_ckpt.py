"""jopt's checkpoint format, version 3 (docs/checkpoint.md), read and written
in Python: jopt.torch converts torch.optim state dicts to it and back.

Only the layout is handled here.  What a checkpoint means (which spec,
which states, which sizes) is checked by jopt_state_load_mem itself,
before it changes anything; a written checkpoint is sealed with
jopt_state_seal (the FNV-1a checksum, which is too slow in Python)."""

import ctypes
import struct

from . import _lib

MAGIC = b"JOPTCKPT"
VERSION = 3
SIZE = {0: 4, 1: 2, 2: 2}  # bytes of an element of each type (float32, bfloat16, float16)


class Param:
    """One parameter's part: numel, shape (outermost first), step count, its
    states as {name: (count, byte offset of its data in the buffer)}, and
    their element types {name: 0 float32, 1 bfloat16, 2 float16}."""

    __slots__ = ("numel", "shape", "step", "states", "dtypes")

    def __init__(self, numel, shape, step, states, dtypes):
        self.numel, self.shape, self.step, self.states = numel, shape, step, states
        self.dtypes = dtypes


class Group:
    """A group's part; `tail` is its group step, group states and precision
    options (state dtype, stochastic rounding, seed), as saved."""
    __slots__ = ("nparams", "values", "runtime", "keys", "tail")

    def __init__(self, nparams, values, runtime, keys, tail):
        self.nparams, self.values, self.runtime, self.keys = nparams, values, runtime, keys
        self.tail = tail


class Checkpoint:
    """A parsed checkpoint over `buf` (bytes or bytearray), kept by reference:
    state data is read from it by offset."""

    def __init__(self, buf):
        self.buf = buf
        mv = memoryview(buf)
        pos = [0]

        def take(n):
            if pos[0] + n > len(buf) - 8:
                raise ValueError("jopt: truncated checkpoint")
            out = mv[pos[0]:pos[0] + n]
            pos[0] += n
            return out

        def u32():
            return struct.unpack("<I", take(4))[0]

        def u64():
            return struct.unpack("<Q", take(8))[0]

        def string():
            return bytes(take(u32())).decode()

        if bytes(take(8)) != MAGIC:
            raise ValueError("jopt: not a jopt checkpoint")
        self.version = u32()
        u32()
        if self.version != VERSION:
            raise ValueError("jopt: checkpoint version %d" % self.version)
        self.spec = string()
        self.spec_hash = u64()
        self.nvalues, self.nhyper, self.nstate = u32(), u32(), u32()
        self.state_names = [string() for _ in range(self.nstate)]
        self.key_names = [string() for _ in range(u32())]
        self.head_end = pos[0]  # what follows is ngroups
        ngroups = u32()
        self.groups, self.params = [], []
        for _ in range(ngroups):
            np_ = u32()
            values = bytes(take(8 * self.nvalues))
            runtime = bytes(take(self.nhyper))
            keys = list(struct.unpack("<%dd" % len(self.key_names),
                                      take(8 * len(self.key_names))))
            start = pos[0]
            u64()  # the group step
            gset = u64()
            take(8 * bin(gset).count("1"))
            take(1 + 1 + 8)  # state_dtype, stochastic_rounding, seed
            self.groups.append(Group(np_, values, runtime, keys,
                                     bytes(mv[start:pos[0]])))
            for _ in range(np_):
                numel = u64()
                shape = tuple(u64() for _ in range(u32()))
                step, present = u64(), u64()
                states, dtypes = {}, {}
                for k, name in enumerate(self.state_names):
                    if present >> k & 1:
                        count = u64()
                        dt = take(1)[0]
                        if dt not in SIZE:
                            raise ValueError("jopt: state '%s' has element type %d" % (name, dt))
                        states[name] = (count, pos[0])
                        dtypes[name] = dt
                        take(SIZE[dt] * count)
                self.params.append(Param(numel, shape, step, states, dtypes))
        # a closure optimizer's part: its step count and its driver's state
        self.closure = None
        if pos[0] < len(buf) - 8:
            steps = u64()
            blob = bytes(take(u64()))
            self.closure = (steps, blob)
        if pos[0] != len(buf) - 8:
            raise ValueError("jopt: malformed checkpoint")

    def address(self, offset):
        """The address of byte `offset` of the buffer (for a bytearray)."""
        return ctypes.addressof(ctypes.c_char.from_buffer(self.buf, offset))


def build(ck, groups, params, closure):
    """A sealed checkpoint with ck's header.  groups: [(Group of ck, keys)];
    params: [(numel, step, {name: (count, address of count elements or
    None for zeros[, element type: 0 float32 (the default), 1 bfloat16,
    2 float16])})] in order; closure: (steps, bytes) or None."""
    out = bytearray()
    out += ck.buf[:ck.head_end]
    out += struct.pack("<I", len(groups))
    order = {n: k for k, n in enumerate(ck.state_names)}
    copies = []  # (offset in out, source address, bytes)
    it = iter(params)
    shapes = iter(p.shape for p in ck.params)
    for g, keys in groups:
        out += struct.pack("<I", g.nparams)
        out += g.values
        out += g.runtime
        out += struct.pack("<%dd" % len(keys), *keys)
        out += g.tail
        for _ in range(g.nparams):
            numel, step, states = next(it)
            shape = next(shapes)
            present = 0
            for name in states:
                present |= 1 << order[name]
            out += struct.pack("<QI", numel, len(shape))
            out += struct.pack("<%dQ" % len(shape), *shape)
            out += struct.pack("<QQ", step, present)
            for name in sorted(states, key=order.__getitem__):
                count, addr, *dt = states[name]
                dt = dt[0] if dt else 0
                out += struct.pack("<QB", count, dt)
                copies.append((len(out), addr, SIZE[dt] * count))
                out += bytes(SIZE[dt] * count)
    if closure is not None:
        steps, blob = closure
        out += struct.pack("<QQ", steps, len(blob))
        out += blob
    out += bytes(8)
    for off, addr, n in copies:
        if addr and n:
            ctypes.memmove(ctypes.addressof(ctypes.c_char.from_buffer(out, off)), addr, n)
    seal(out)
    return out


def seal(buf):
    if _lib.jopt_state_seal is None:
        raise _lib.JoptError(_lib.EINVAL, "jopt: this libjopt has no jopt_state_seal "
                             "(it cannot load a torch.optim state dict)")
    arr = (ctypes.c_char * len(buf)).from_buffer(buf)
    if _lib.jopt_state_seal(arr, len(buf)) != _lib.OK:
        raise _lib.JoptError(_lib.EINVAL, "jopt: jopt_state_seal failed")
