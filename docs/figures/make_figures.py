"""Draw the figures of the lacmfer documentation that are not produced by a training run.

Run from the repository root (needs matplotlib and lacmfer)::

    python docs/figures/make_figures.py    # writes docs/_static/architecture.png, synthetic_grid.png

The PNG is committed; rerun this script after changing the drawing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

STATIC = Path(__file__).resolve().parent.parent / "_static"

# colours: encoder grey, global blue, local green, heads purple, losses orange/red
C_IN = "#eeeeee"
C_ENC = "#d9d9d9"
C_GLOBAL = "#cfe2f3"
C_LOCAL_L = "#d9ead3"
C_LOCAL_R = "#b6d7a8"
C_HEAD = "#e1d5e7"
C_FUSE = "#fff2cc"
C_INTER = "#fce5cd"
C_INTRA = "#f4cccc"
C_CE = "#ffffff"


def box(ax, x, y, w, h, text, color, *, fontsize=9, bold=False, ls="-", ec="#333333"):
    """A rounded box centred at (x, y) with ``text`` in it; returns its extent."""
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        fc=color,
        ec=ec,
        lw=1.2,
        ls=ls,
    )
    ax.add_patch(patch)
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        fontweight="bold" if bold else "normal",
        wrap=True,
    )
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def arrow(ax, start, end, *, color="#333333", ls="-", lw=1.3, rad=0.0, style="-|>"):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=12,
            color=color,
            lw=lw,
            ls=ls,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )


def draw_architecture(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(16, 8.2))
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 8.2)
    ax.axis("off")

    # -- inputs and encoder ---------------------------------------------------------------
    box(ax, 0.95, 6.35, 1.5, 0.9, "source batch\n$x_s$, labels $y_s$\n(5 datasets, pooled)", C_IN)
    box(ax, 0.95, 4.35, 1.5, 0.9, "target batch\n$x_t$ (no labels)", C_IN)
    box(
        ax,
        3.05,
        5.35,
        1.9,
        1.5,
        "shared encoder $E$\nResNet-18 stem\n+ layer1 + layer2\n(torchvision names)",
        C_ENC,
    )
    arrow(ax, (1.7, 6.2), (2.1, 5.75))
    arrow(ax, (1.7, 4.5), (2.1, 4.95))
    ax.text(
        3.05,
        4.35,
        "source and target in\nseparate forward calls\n(per-domain BN statistics)",
        ha="center",
        va="top",
        fontsize=7.5,
        style="italic",
    )
    box(ax, 5.0, 5.35, 1.25, 0.8, "feature map\n$(B, 128, 28, 28)$", C_ENC, fontsize=8.5)
    arrow(ax, (4.0, 5.35), (4.37, 5.35))

    # -- global branch ----------------------------------------------------------------------
    box(
        ax,
        7.55,
        7.1,
        3.0,
        1.05,
        "global branch $A_G$\n6 attention blocks 128→256 (stride 2)\n"
        "3 attention blocks 256→1024 (stride 2)\nglobal average pool",
        C_GLOBAL,
        fontsize=8.5,
    )
    arrow(ax, (5.3, 5.75), (6.05, 6.85), rad=-0.15)

    # -- local branch: 2x2 quadrants with column-shared sub-networks ------------------------
    gx, gy, cell = 6.35, 3.15, 0.62  # lower-left corner of the 2x2 grid
    names = {(0, 1): "TL", (1, 1): "TR", (0, 0): "BL", (1, 0): "BR"}
    for (cx, cy), name in names.items():
        ax.add_patch(
            Rectangle(
                (gx + cx * cell, gy + cy * cell),
                cell,
                cell,
                fc=C_LOCAL_L if cx == 0 else C_LOCAL_R,
                ec="#333333",
                lw=1.0,
            )
        )
        ax.text(
            gx + (cx + 0.5) * cell,
            gy + (cy + 0.5) * cell,
            name,
            ha="center",
            va="center",
            fontsize=8,
        )
    ax.text(
        gx + cell,
        gy + 2 * cell + 0.34,
        "2×2 quadrants, 14×14 each",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    arrow(ax, (5.3, 4.95), (gx - 0.05, gy + cell), rad=0.15)

    box(
        ax,
        9.05,
        4.25,
        2.0,
        0.85,
        "left sub-network\n2 attention blocks\n128→256, pool",
        C_LOCAL_L,
        fontsize=8,
    )
    box(
        ax,
        9.05,
        2.95,
        2.0,
        0.85,
        "right sub-network\n2 attention blocks\n128→256, pool",
        C_LOCAL_R,
        fontsize=8,
    )
    # left column (TL, BL) -> left sub-network; right column (TR, BR) -> right sub-network
    arrow(ax, (gx + 0.5 * cell, gy + 2 * cell), (8.05, 4.3), rad=-0.3)
    arrow(ax, (gx + 1.5 * cell, gy), (8.05, 2.9), rad=0.3)
    ax.text(
        6.9,
        2.45,
        'share="column": the left column (TL, BL) shares\n'
        "one sub-network, the right column (TR, BR) another;\n"
        "each runs once on its patches folded into the batch",
        ha="center",
        va="top",
        fontsize=7.5,
        style="italic",
    )
    box(
        ax,
        10.9,
        3.6,
        1.25,
        0.9,
        "concat\n[TL, TR, BL, BR]\n$f_L\\in\\mathbb{R}^{1024}$",
        C_LOCAL_L,
        fontsize=8,
    )
    arrow(ax, (10.05, 4.2), (10.28, 3.8))
    arrow(ax, (10.05, 3.0), (10.28, 3.4))

    # -- features, heads, fusion ------------------------------------------------------------
    box(ax, 10.9, 7.1, 1.25, 0.7, "$f_G\\in\\mathbb{R}^{1024}$", C_GLOBAL, fontsize=9)
    arrow(ax, (9.05, 7.1), (10.28, 7.1))
    box(ax, 12.55, 7.1, 1.4, 0.7, "head $C_G$\nLinear(1024, K)", C_HEAD, fontsize=8.5)
    box(ax, 12.55, 3.6, 1.4, 0.7, "head $C_L$\nLinear(1024, K)", C_HEAD, fontsize=8.5)
    arrow(ax, (11.53, 7.1), (11.85, 7.1))
    arrow(ax, (11.53, 3.6), (11.85, 3.6))
    box(ax, 14.25, 7.1, 1.0, 0.6, "$z_G$", C_HEAD, fontsize=10)
    box(ax, 14.25, 3.6, 1.0, 0.6, "$z_L$", C_HEAD, fontsize=10)
    arrow(ax, (13.25, 7.1), (13.75, 7.1))
    arrow(ax, (13.25, 3.6), (13.75, 3.6))
    box(
        ax,
        14.25,
        5.35,
        1.3,
        0.95,
        "prediction\n$(z_G + z_L)/2$\n(or one view)",
        C_FUSE,
        fontsize=8.5,
        bold=False,
    )
    arrow(ax, (14.25, 6.8), (14.25, 5.83))
    arrow(ax, (14.25, 3.9), (14.25, 4.87))

    # -- losses -----------------------------------------------------------------------------
    box(
        ax,
        12.0,
        5.35,
        2.2,
        1.15,
        "dual-level inter-domain\nalignment, per branch\n$L_{sid} + 0.02\\,L_{cid}$\n"
        "on $(f, z)$ of source + target",
        C_INTER,
        fontsize=8,
        ls="--",
    )
    arrow(ax, (10.9, 6.75), (11.4, 5.93), color="#b45f06", ls="--", lw=1.0)
    arrow(ax, (10.9, 4.05), (11.4, 4.78), color="#b45f06", ls="--", lw=1.0)
    arrow(ax, (13.75, 6.95), (12.9, 5.93), color="#b45f06", ls="--", lw=1.0)
    arrow(ax, (13.75, 3.75), (12.9, 4.78), color="#b45f06", ls="--", lw=1.0)

    box(
        ax,
        13.2,
        1.75,
        3.7,
        1.25,
        "multi-view intra-domain alignment (target batch)\n"
        "clustering consistency $L_{mcc}$ on $M = P_G^\\top P_L$\n"
        "pseudo-label voting $L_{mvv}$: keep if views agree\nand one is confident (> 0.9)",
        C_INTRA,
        fontsize=8,
        ls="--",
    )
    red = {"color": "#990000", "ls": "--", "lw": 1.0}
    ax.plot([14.75, 15.6, 15.6], [7.1, 7.1, 1.95], **red)
    arrow(ax, (15.6, 1.95), (15.07, 1.95), **red)
    ax.plot([14.75, 15.35, 15.35], [3.6, 3.6, 1.6], **red)
    arrow(ax, (15.35, 1.6), (15.07, 1.6), **red)
    ax.text(
        15.7, 4.5, "target $z_G$, $z_L$", rotation=90, fontsize=7.5, color="#990000", va="center"
    )

    box(
        ax,
        13.2,
        0.45,
        3.7,
        0.55,
        "source: label-smoothed CE on $z_G$ and $z_L$",
        C_CE,
        fontsize=8,
        ls="--",
    )

    ax.text(
        0.15,
        1.55,
        "$L = CE_{ls}(z_G^s, y) + CE_{ls}(z_L^s, y)$\n"
        "$\\;\\;+\\,0.4\\sum_{b\\in\\{G,L\\}}(L^b_{sid} + 0.02\\,L^b_{cid})$\n"
        "$\\;\\;+\\,0.5\\,L_{mcc} + 0.1\\,L_{mvv}$",
        ha="left",
        va="center",
        fontsize=10.5,
    )
    ax.text(
        0.15,
        0.45,
        "solid arrows: forward pass; dashed: inputs of a loss.  "
        "Widths shown for 224×224 input and the paper's model.",
        ha="left",
        va="center",
        fontsize=7.5,
        color="#555555",
    )
    ax.set_title("LA-CMFER: model and losses", fontsize=13, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_synthetic_grid(path: Path, *, image_size: int = 96, seed: int = 0) -> None:
    """The synthetic faces of ``lacmfer.data.synthetic``: a row per domain, a column per class."""
    import torch

    from lacmfer.data import CLASSES
    from lacmfer.data.synthetic import SYNTHETIC_DOMAINS, render_faces

    pad = 2
    rows, cols = len(SYNTHETIC_DOMAINS), len(CLASSES)
    grid = torch.ones(3, rows * (image_size + pad) + pad, cols * (image_size + pad) + pad)
    for i, domain in enumerate(SYNTHETIC_DOMAINS):
        faces = render_faces(
            torch.arange(cols), intensity=1.0, style=domain, image_size=image_size,
            generator=torch.Generator().manual_seed(seed * 100 + i),
        )  # fmt: skip
        for j in range(cols):
            y0, x0 = pad + i * (image_size + pad), pad + j * (image_size + pad)
            grid[:, y0 : y0 + image_size, x0 : x0 + image_size] = faces[j]
    height, width = grid.shape[1:]
    dpi = 100
    fig = plt.figure(figsize=((width + 90) / dpi, (height + 20) / dpi), dpi=dpi)
    ax = fig.add_axes((90 / (width + 90), 0.0, width / (width + 90), height / (height + 20)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    for j, name in enumerate(CLASSES):
        ax.text(pad + j * (image_size + pad) + image_size / 2, -4, name, ha="center", va="bottom",
                fontsize=8)  # fmt: skip
    for i, name in enumerate(SYNTHETIC_DOMAINS):
        ax.text(-6, pad + i * (image_size + pad) + image_size / 2, name, ha="right", va="center",
                fontsize=8)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STATIC, help="output folder")
    args = parser.parse_args()
    plt.switch_backend("Agg")
    draw_architecture(args.out / "architecture.png")
    print(f"wrote {args.out / 'architecture.png'}")
    draw_synthetic_grid(args.out / "synthetic_grid.png")
    print(f"wrote {args.out / 'synthetic_grid.png'}")


if __name__ == "__main__":
    main()
