"""Where a CNN training step's time goes: per layer and pass, from a real XLA:CPU profile.

    python -m benchmarks.cnn_profile [--config_variant=study] [--steps 8] [--markdown]
        [--torch] [--ops 15]

Compiles the jitted training epoch (``train.population_epoch``, P = 1) of a configs/fer2013_cnn.py
network on random FER2013-shaped data, runs it under ``jax.profiler`` and reads the trace: every
XLA thunk (a fused kernel, a convolution, a dot, a copy) is one event, with its start and, for
kernels XLA runs asynchronously on its thread pool, a matching ``end:`` event. Each thunk is
attributed to the part of the step it came from by the named scopes in its HLO metadata
(``forward_03_conv``, ``backward_03_conv``, ``update``, ``batch``: mlp.model.scope and
mlp.train), and its bytes (operands + result) and flops (convolutions and dots, 2 per
multiply-add) are read from the optimised HLO. The table gives, per layer, forward and backward
milliseconds per step and the rate they run at: GFLOP/s where the pass has convolutions or dots,
else GB/s (memory-bound passes). Times are summed over the thunks (on 2 threads they may
overlap, so the column can exceed the wall time per step, given below it).

``--torch`` adds PyTorch eager's time per layer (forward, and backward measured as the
difference of forward+backward with and without the layer's gradient, by ``torch.profiler``'s
per-module records): the same layers as benchmarks/cnn_speed.py builds.
"""

import argparse
import collections
import dataclasses
import functools
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time

import numpy as np

from benchmarks import cnn_speed, peers

DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
_SHAPE = re.compile(r"\b(f32|bf16|f16|s32|u32|pred|s8|u8)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_SCOPE = re.compile(r"(forward|backward)_(\d+)_(\w+?)(?=/|$)|(forward_softmax|backward_softmax)")
CONTAINERS = {"while", "call", "conditional"}


@dataclasses.dataclass
class Instr:
  name: str
  opcode: str
  out_bytes: int
  operands: list[str]
  op_name: str
  flops: float


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def _conv_flops(line: str, out_text: str, operand_shapes: list[str]) -> float:
  """2 x output elements x kernel window x input features (from the kernel's shape)."""
  m = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
  out = [int(d) for d in _SHAPE.search(out_text)[2].split(",") if d]
  if not m or len(operand_shapes) < 2:
    return 0.0
  kernel = [int(d) for d in _SHAPE.search(operand_shapes[1])[2].split(",") if d]
  kernel_labels = m[2]
  o = kernel_labels.index("o")
  return 2.0 * math.prod(out) * math.prod(kernel) / kernel[o]


def _dot_flops(line: str, out_text: str, operand_shapes: list[str]) -> float:
  """2 x output elements x contracted size."""
  m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
  out = [int(d) for d in _SHAPE.search(out_text)[2].split(",") if d]
  if not m or not operand_shapes:
    return 0.0
  lhs = [int(d) for d in _SHAPE.search(operand_shapes[0])[2].split(",") if d]
  k = math.prod(lhs[int(i)] for i in m[1].split(",") if i)
  return 2.0 * math.prod(out) * k


def parse_hlo(text: str) -> dict[str, Instr]:
  """Every instruction of an optimised HLO module: opcode, result bytes, operands, metadata, and
  flops for convolutions and dots (including those inside fusions, credited to the fusion)."""
  shapes, lines, comp_of, calls = {}, {}, {}, {}
  computation = None
  for line in text.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      computation = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
      computation = computation.lstrip("%")
      continue
    m = _INSTR.match(line)
    if m:
      shapes[m[1]] = m[2]
      lines[m[1]] = (m, line)
      comp_of[m[1]] = computation
  instrs, flops_in = {}, collections.Counter()
  for name, (m, line) in lines.items():
    operands = re.findall(r"%([\w.\-]+)", m[4].split("), ")[0])
    op_shapes = [shapes.get(o, "") for o in operands]
    flops = 0.0
    if m[3] == "convolution":
      flops = _conv_flops(line, m[2], op_shapes)
    elif m[3] == "dot":
      flops = _dot_flops(line, m[2], op_shapes)
    flops_in[comp_of[name]] += flops
    meta = re.search(r'op_name="([^"]*)"', line)
    call = re.search(r"calls=%?([\w.\-]+)", line)
    if call:
      calls[name] = call[1]
    instrs[name] = Instr(name, m[3], _shape_bytes(m[2]), operands, meta[1] if meta else "", flops)
  for name, callee in calls.items():  # a fusion's flops are those of what it calls
    if instrs[name].opcode == "fusion":
      instrs[name].flops += flops_in.get(callee, 0.0)
  for ins in instrs.values():
    ins.in_bytes = sum(_shape_bytes(shapes.get(o, "")) for o in ins.operands)

  # XLA drops the metadata of some instructions it creates (dots it rewrites): they take that of
  # the nearest operand that has some, the part of the step whose values they consume.
  @functools.cache
  def inherited(name, depth=0):
    ins = instrs.get(name)
    if ins is None or depth > 8:
      return ""
    if ins.op_name:
      return ins.op_name
    for o in ins.operands:
      if found := inherited(o, depth + 1):
        return found
    return ""

  for ins in instrs.values():
    if not ins.op_name:
      ins.op_name = inherited(ins.name)
  return instrs


def part_of(op_name: str) -> tuple[str, str]:
  """(part, pass) of a thunk from its scopes: ("03 conv", "forward"), ("update", "update")..."""
  found = [m for m in _SCOPE.finditer(op_name)]
  if found:
    m = found[-1]
    if m[4]:
      return "softmax + loss", m[4].split("_")[0]
    return f"{int(m[2]):02d} {m[3]}", m[1]
  for scope in ("update", "batch"):
    if f"/{scope}/" in op_name or op_name.endswith(f"/{scope}"):
      return scope, scope
  return "other", "other"


def thunk_times(trace_dir: str, module: str) -> dict[str, list[float]]:
  """Seconds of every execution of every thunk of ``module``: a thunk's own event, or up to its
  ``end:`` event when XLA ran it asynchronously."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(path) as f:
    events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  begins, ends = collections.defaultdict(list), collections.defaultdict(list)
  for e in events:
    args = e.get("args", {})
    if args.get("hlo_module") == module and "hlo_op" in args:
      begins[args["hlo_op"]].append(e)
    elif e["name"].startswith("end: "):
      ends[e["name"][5:]].append(e)
  times = {}
  for name, bs in begins.items():
    bs.sort(key=lambda e: e["ts"])
    es = sorted(ends.get(name, []), key=lambda e: e["ts"])
    out, j = [], 0
    for k, b in enumerate(bs):
      until = bs[k + 1]["ts"] if k + 1 < len(bs) else math.inf
      while j < len(es) and es[j]["ts"] < b["ts"]:
        j += 1
      end = b["ts"] + b["dur"]
      if j < len(es) and es[j]["ts"] <= until:  # its own end, not the next execution's
        end = max(end, es[j]["ts"])
        j += 1
      out.append((end - b["ts"]) * 1e-6)
    times[name] = out
  return times


def profile_ours(args) -> tuple[list[dict], dict]:
  import jax
  import jax.numpy as jnp

  from mlp import optim, sweep, train

  cfg = cnn_speed.load_config(args.config_variant)
  bs = int(cfg.train.batch_size)
  x, y = cnn_speed.fer_like(args.steps * bs)
  spec = sweep.spec_of(cfg, cnn_speed.INPUT_SHAPE, cnn_speed.NUM_CLASSES)
  spec = dataclasses.replace(spec, flip=False, shift=0)
  hyper = jax.tree.map(
    jnp.asarray, train.stack([sweep.hyper_of(cfg, cnn_speed.INPUT_SHAPE, cnn_speed.NUM_CLASSES)])
  )
  keys = jax.random.split(jax.random.key(0), 1)
  params, state = train._init_population(spec.net, keys, jnp.float32)
  opt = jax.vmap(optim.init_state)(params)
  call = (spec, params, state, opt, hyper, keys, jnp.asarray(0, jnp.int32), jnp.ones(1, bool))
  xd, yd = jnp.asarray(x), jnp.asarray(y)
  hlo = train.population_epoch.lower(*call, xd, yd).compile().as_text()
  instrs = parse_hlo(hlo)
  if args.dump_hlo:
    with open(args.dump_hlo, "w") as f:
      f.write(hlo)

  def run():
    jax.block_until_ready(train.population_epoch(*call, xd, yd))

  run()
  walls = []
  for _ in range(3):
    start = time.perf_counter()
    run()
    walls.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as trace_dir:
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    options.host_tracer_level = 2
    jax.profiler.start_trace(trace_dir, profiler_options=options)
    run()
    jax.profiler.stop_trace()
    times = thunk_times(trace_dir, "jit_population_epoch")
  parts = collections.defaultdict(lambda: collections.Counter())
  top = collections.Counter()
  for name, secs in times.items():
    ins = instrs.get(name)
    if ins is None or ins.opcode in CONTAINERS:
      continue
    part, direction = part_of(ins.op_name)
    n = len(secs)
    c = parts[(part, direction)]
    c["seconds"] += sum(secs)
    c["bytes"] += n * (ins.out_bytes + ins.in_bytes)
    c["flops"] += n * ins.flops
    c["thunks"] += n
    top[(name, ins.opcode, part, direction, ins.op_name.rsplit("/", 1)[-1])] += sum(secs)
  steps = args.steps
  if args.part:
    for (name, opcode, part, direction, src), sec in sorted(top.items(), key=lambda kv: -kv[1]):
      if part == args.part:
        ins = instrs[name]
        print(
          f"{direction:9s} {sec / steps * 1e3:7.2f} ms  {name} ({opcode}, {src}) "
          f"{(ins.in_bytes + ins.out_bytes) / 1e6:.1f} MB {ins.flops / 1e9:.2f} GFLOP",
          file=sys.stderr,
        )
  rows = []
  for (part, direction), c in sorted(parts.items()):
    rows.append(
      dict(
        part=part,
        direction=direction,
        ms=c["seconds"] / steps * 1e3,
        gflops=c["flops"] / c["seconds"] / 1e9 if c["seconds"] else 0.0,
        gbs=c["bytes"] / c["seconds"] / 1e9 if c["seconds"] else 0.0,
        thunks=c["thunks"] / steps,
      )
    )
  info = dict(
    wall_ms=float(np.median(walls)) / steps * 1e3,
    arch=cfg.model.layers,
    batch=bs,
    steps=steps,
    top=[(k, v / steps * 1e3) for k, v in top.most_common(args.ops)],
  )
  return rows, info


def profile_torch(args) -> dict[tuple[str, str], float]:
  """PyTorch eager ms per step for each layer's forward and backward (torch.profiler)."""
  import torch

  cfg = cnn_speed.load_config(args.config_variant)
  bs = int(cfg.train.batch_size)
  torch.set_num_threads(len(cnn_speed.usable_cpus()))
  net, layer_hyper = cnn_speed.network(cfg)
  model = cnn_speed.torch_model(net, layer_hyper)
  model.train()
  x, y = cnn_speed.fer_like(bs)
  h, w, c = cnn_speed.INPUT_SHAPE
  xt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, h, w, c).transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(y.astype(np.int64))
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  # Every module of the torch model maps to one of our layers (ZeroPad2d to the conv after it).
  names, i = [], 0
  for mod in model:
    names.append(f"{i:02d} {net.layers[i].kind}")
    if not isinstance(mod, torch.nn.ZeroPad2d):
      i += 1

  def step():
    opt.zero_grad()
    out = xt
    for k, mod in enumerate(model):
      with torch.profiler.record_function(f"forward|{names[k]}"):
        out = mod(out)
      out.register_hook(lambda g, k=k: _mark(k))
    loss = torch.nn.functional.cross_entropy(out, yt)
    loss.backward()
    _mark(-1)  # the end of the first module's backward
    opt.step()

  marks = []

  def _mark(k):  # the gradient w.r.t. module k's output has arrived: its backward starts
    marks.append((k, time.perf_counter()))

  for _ in range(3):
    step()
  fwd = collections.Counter()
  bwd = collections.Counter()
  for _ in range(args.steps):
    marks.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
      step()
    for e in prof.key_averages():
      if e.key.startswith("forward|"):
        fwd[e.key.split("|")[1]] += e.cpu_time_total * 1e-6
    # Module k's backward runs from its output gradient's arrival to the next module's (k - 1).
    marks.sort(key=lambda m: m[1])
    for (k, t0), (_, t1) in zip(marks, marks[1:], strict=False):
      bwd[names[k]] += t1 - t0
  out = {}
  for name in set(names):
    out[(name, "forward")] = fwd[name] / args.steps * 1e3
    out[(name, "backward")] = bwd[name] / args.steps * 1e3
  return out


def render(rows: list[dict], info: dict, torch_ms: dict | None, markdown: bool) -> str:
  by_part = collections.defaultdict(dict)
  for r in rows:
    by_part[r["part"]][r["direction"]] = r
  head = ["part", "fwd ms", "fwd rate", "bwd ms", "bwd rate"]
  if torch_ms:
    head += ["torch fwd ms", "torch bwd ms"]

  def rate(r):
    if r is None:
      return ""
    return f"{r['gflops']:.0f} GFLOP/s" if r["gflops"] > 0.05 * r["gbs"] else f"{r['gbs']:.1f} GB/s"

  body, totals = [], collections.Counter()
  for part in sorted(by_part):
    d = by_part[part]
    f = d.get("forward") or d.get("update") or d.get("batch") or d.get("other")
    b = d.get("backward")
    row = [part, f"{f['ms']:.1f}" if f else "", rate(f), f"{b['ms']:.1f}" if b else "", rate(b)]
    totals["ours"] += (f["ms"] if f else 0) + (b["ms"] if b else 0)
    if torch_ms:
      tf, tb = torch_ms.get((part, "forward")), torch_ms.get((part, "backward"))
      row += [f"{tf:.1f}" if tf else "", f"{tb:.1f}" if tb else ""]
      totals["torch"] += (tf or 0) + (tb or 0)
    body.append(row)
  notes = [
    f"Network: {info['arch']}; batch {info['batch']}, float32.",
    f"Thunk time summed per part: {totals['ours']:.1f} ms per step; wall time "
    f"{info['wall_ms']:.1f} ms per step (median of 3 epochs of {info['steps']} steps, unprofiled).",
  ]
  if torch_ms:
    notes.append(f"PyTorch eager, summed per module: {totals['torch']:.1f} ms per step.")
  notes.append(
    "Most expensive thunks (ms per step): "
    + "; ".join(
      f"{name} ({opcode}, {part} {direction}, {src}) {ms:.1f}"
      for (name, opcode, part, direction, src), ms in info["top"]
    )
  )
  return peers.format_table(head, body, notes, markdown)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config_variant", default="", help="configs/fer2013_cnn.py variant")
  parser.add_argument("--steps", type=int, default=8, help="training steps in the traced epoch")
  parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  parser.add_argument("--torch", action="store_true", help="add PyTorch eager's time per layer")
  parser.add_argument("--ops", type=int, default=12, help="list this many most expensive thunks")
  parser.add_argument("--part", default="", help="list the thunks of this part, e.g. '04 conv'")
  parser.add_argument("--dump_hlo", default="", help="write the optimised HLO to this file")
  args = parser.parse_args(argv)
  rows, info = profile_ours(args)
  torch_ms = profile_torch(args) if args.torch else None
  print(render(rows, info, torch_ms, args.markdown))


if __name__ == "__main__":
  sys.exit(main())
