#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Loss and accuracy curves of several clopt optimizers training the Fashion-MNIST MLP, side by
# side, drawn with gnuplot from the CSVs of clopt-train-mlp.
#
#   examples/train/plot_curves.sh [path/to/clopt-train-mlp]
#
# Environment (all optional):
#   OPTIMIZERS   rules to compare (default "adamw sgd lion adafactor sophia lamb")
#   EPOCHS       epochs per run (default 5)
#   OUT          output folder (default docs): writes OUT/mlp_curves.png and, under
#                OUT/mlp_curves/, RULE.csv (clopt-train-mlp --csv, one row per epoch) and
#                RULE_steps.csv (the training loss averaged over windows of 1/WINDOWS epoch)
#   WINDOWS      loss windows per epoch (default 10)
#   LOSS_YMIN    lower end of the training-loss axis (default 0.15; log scale)
#   PLOT_ONLY=1  redraw the PNG from the CSVs already in OUT/mlp_curves/ (no training)
#   EXTRA        more options for clopt-train-mlp (e.g. "--train-limit 10000 --device 0")
# The data come from Debian's dataset-fashion-mnist package (or --data in EXTRA).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-}"
if [ -z "$bin" ]; then
  for c in "$root"/build*/examples/train/clopt-train-mlp "$root"/build*/*/examples/train/clopt-train-mlp \
           "$root"/build*/train/clopt-train-mlp; do
    if [ -x "$c" ]; then bin="$c"; break; fi
  done
fi
OPTIMIZERS="${OPTIMIZERS:-adamw sgd lion adafactor sophia lamb}"
EPOCHS="${EPOCHS:-5}"
OUT="${OUT:-$root/docs}"
WINDOWS="${WINDOWS:-10}"
LOSS_YMIN="${LOSS_YMIN:-0.15}"
EXTRA="${EXTRA:-}"
command -v gnuplot >/dev/null || { echo "plot_curves.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
dir="$OUT/mlp_curves"
mkdir -p "$dir"

if [ "${PLOT_ONLY:-0}" != 1 ]; then
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "plot_curves.sh: clopt-train-mlp not found; pass its path" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  for r in $OPTIMIZERS; do
    echo "== $r ($EPOCHS epochs)"
    # shellcheck disable=SC2086
    "$bin" --optimizer "$r" --epochs "$EPOCHS" --csv "$dir/$r.csv" --steps-csv "$tmp/$r.csv" $EXTRA
    # mean loss over windows of 1/WINDOWS epoch, at the window's end (x in epochs)
    awk -F, -v w="$WINDOWS" 'NR == 1 { print "optimizer,epoch,loss"; next }
      { k = int(($3 - 1e-9) * w); if (k != cur && n > 0) { printf "%s,%.4f,%.6f\n", opt, (cur + 1) / w, s / n; s = 0; n = 0 }
        cur = k; opt = $1; s += $4; n++ }
      END { if (n > 0) printf "%s,%.4f,%.6f\n", opt, (cur + 1) / w, s / n }' "$tmp/$r.csv" > "$dir/${r}_steps.csv"
  done
fi

# One colour per rule, the same in every panel.
plots_loss="" plots_tloss="" plots_acc=""
colors=('#1f77b4' '#d62728' '#2ca02c' '#ff7f0e' '#9467bd' '#8c564b' '#e377c2' '#7f7f7f' '#bcbd22' '#17becf')
i=0
for r in $OPTIMIZERS; do
  [ -f "$dir/$r.csv" ] || { echo "plot_curves.sh: $dir/$r.csv missing" >&2; exit 1; }
  c="${colors[$((i % ${#colors[@]}))]}"
  sep=""
  if [ $i -gt 0 ]; then sep=", "; fi
  # noenhanced: rule names keep their underscores (not subscripts)
  plots_loss+="$sep'$dir/${r}_steps.csv' using 2:3 with lines lw 2 lc rgb '$c' title '$r' noenhanced"
  plots_tloss+="$sep'$dir/$r.csv' using 2:7 with linespoints lw 2 pt 7 ps 0.8 lc rgb '$c' title '$r' noenhanced"
  plots_acc+="$sep'$dir/$r.csv' using 2:(100*\$8) with linespoints lw 2 pt 7 ps 0.8 lc rgb '$c' title '$r' noenhanced"
  i=$((i + 1))
done

gnuplot <<EOF
set terminal pngcairo size 1800,620 font 'DejaVu Sans,13' enhanced
set output '$OUT/mlp_curves.png'
set datafile separator ','
set key autotitle columnhead
set grid lc rgb '#d0d0d0'
set border lc rgb '#404040'
set multiplot layout 1,3 title "{/:Bold Fashion-MNIST MLP 784-256-128-10, batch 128, warmup + cosine: clopt optimizers (CLBlast GEMMs, PoCL CPU)}" font ',15'
set xlabel 'epoch'
set xrange [0:$EPOCHS]
set xtics 1
set key top right box opaque
set title 'training loss (mean over 1/$WINDOWS epoch)'
set ylabel 'cross-entropy'
set logscale y
set yrange [$LOSS_YMIN:3]
set ytics (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3)
plot $plots_loss
unset logscale y
set yrange [*:*]
set ytics autofreq
set xrange [0.8:$EPOCHS + 0.2]
set title 'test loss'
plot $plots_tloss
set title 'test accuracy'
set ylabel 'accuracy (%)'
set key bottom right box opaque
plot $plots_acc
unset multiplot
EOF
echo "wrote $OUT/mlp_curves.png"
