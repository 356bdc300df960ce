"""Training throughput of the final-training step: images per second for DARTS and NB201 networks.

One step is what ``python -m tools.train`` does per batch (forward, cross-entropy, backward, SGD
with Nesterov momentum; autocast + GradScaler on CUDA), on a random batch of 32x32 images, timed
after warm-up steps. Networks: the DARTS-V2 genotype at C=16, 8 cells, no auxiliary head (the
search-size DARTS network) and the NB201 network (C=16, N=5) of a strong cell. Data loading and
augmentation are not included.

    python benchmarks/train_speed.py --json
    python benchmarks/train_speed.py --device cuda --steps 100
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2

import torch  # noqa: E402
from torch import nn  # noqa: E402

from tools.costs import count_params  # noqa: E402
from tools.proxies import resolve_device  # noqa: E402
from tools.spaces import get_space, space_names  # noqa: E402
from tools.train import train_step  # noqa: E402

NB201_ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
              "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def networks() -> tuple[list[tuple[str, str, nn.Module]], list[str]]:
    """Return (name, arch, network) for each network measured, and lines about those skipped."""
    nets = [("nb201 C=16 N=5", NB201_ARCH,
             get_space("nb201", channels=16, cells_per_stage=5).build(NB201_ARCH, 10))]
    skipped = []
    if "darts" in space_names():
        from tools.spaces.darts import DARTS_V2

        darts = get_space("darts", channels=16, layers=8, auxiliary=False)
        nets.insert(0, ("darts DARTS-V2 C=16 8 cells", DARTS_V2, darts.build(DARTS_V2, 10)))
    else:
        skipped.append("darts: skipped, the darts search space is not registered in this checkout")
    return nets, skipped


def measure(net: nn.Module, device: torch.device, batch_size: int, warmup: int,
            steps: int) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` untimed ones."""
    amp = device.type == "cuda"
    net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, nesterov=True,
                                weight_decay=3e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)

    def run(n: int) -> None:
        for _ in range(n):
            train_step(net, x, y, optimizer, scaler, criterion, amp=amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(warmup)
    tic = time.perf_counter()
    run(steps)
    return steps * batch_size / (time.perf_counter() - tic)


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (CPU 2, CUDA 10)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 5, CUDA 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        if args.batch_size < 2 or (args.steps is not None and args.steps < 1) or (
                args.warmup is not None and args.warmup < 0) or args.threads < 0:
            raise ValueError("--batch-size must be >= 2, --steps >= 1, --warmup and --threads >= 0")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    steps = args.steps if args.steps is not None else (50 if cuda else 5)
    torch.manual_seed(0)
    nets, skipped = networks()
    report = {
        "device": f"cuda: {torch.cuda.get_device_name(device)}" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "mixed_precision": cuda,
        "batch_size": args.batch_size,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "torch": torch.__version__,
        "networks": [],
        "skipped": skipped,
    }
    for name, arch, net in nets:
        rate = measure(net, device, args.batch_size, warmup, steps)
        report["networks"].append({"network": name, "arch": arch, "params": count_params(net),
                                   "images_per_s": round(rate, 1)})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"device: {report['device']}"
          + (f" ({report['threads']} threads)" if not cuda else ", mixed precision")
          + f"; batch {args.batch_size}, {warmup} warm-up + {steps} timed steps")
    for row in report["networks"]:
        print(f"{row['network']:30s} {row['params'] / 1e6:7.3f}M params "
              f"{row['images_per_s']:10,.1f} images/s")
    for line in skipped:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
