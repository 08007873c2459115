#!/usr/bin/env bash
# Regenerates the menu-bar icons and the app icon from one drawing (needs ImageMagick 6+).
# The glyph is a rotation arrow on a 288x288 design grid (16x the 18 pt menu-bar size);
# a centre mark tells the state: a dot (all good), a ring (some cooling down), an
# exclamation mark (the last provider standing), a slash (nothing available).
#   tray/tray-{ok,cooling,last,down}.png       18x18  macOS template (black on transparent)
#   tray/tray-{ok,cooling,last,down}@2x.png    36x36  macOS template, Retina
#   tray/tray-{ok,cooling,last,down}-color.png 44x44  Linux panels (no template tinting)
#   AppIcon.png                          1024x1024 colour icon for the app bundle
# Usage: assets/make-icons.sh   (writes next to itself; commit the PNGs)
set -euo pipefail
cd "$(dirname "$0")"
command -v convert >/dev/null || { echo "make-icons: ImageMagick's convert is required" >&2; exit 1; }

# MVG for the glyph in colour $1 on the 288 grid, state $2.
glyph() {
  local c=$1 state=$2
  # The arc runs clockwise from 40 to 320 degrees (0 = right, y down); the arrowhead sits
  # at its end and points along the clockwise tangent.
  printf 'fill none stroke %s stroke-width 28 stroke-linecap round arc 44,44 244,244 40,320 ' "$c"
  printf 'stroke none fill %s polygon 252,112 256,48 186,100 ' "$c"
  case $state in
    ok) printf 'fill %s circle 144,144 144,180 ' "$c" ;;
    cooling) printf 'fill none stroke %s stroke-width 16 circle 144,144 144,174 ' "$c" ;;
    last) printf 'fill none stroke %s stroke-width 26 stroke-linecap round line 144,100 144,150 ' "$c"
          printf 'stroke none fill %s circle 144,190 144,205 ' "$c" ;;
    down) printf 'fill none stroke %s stroke-width 28 stroke-linecap round line 60,228 228,60 ' "$c" ;;
  esac
}

# render SIZE COLOUR STATE OUT: the glyph drawn at 4x the target and scaled down, for
# clean antialiasing at 18 px.
render() {
  local size=$1 colour=$2 state=$3 out=$4 big=$(( $1 * 4 ))
  local k
  k=$(awk -v b="$big" 'BEGIN { printf "%.6f", b / 288 }')
  convert -size "${big}x${big}" xc:none \
    -draw "affine $k,0,0,$k,0,0 $(glyph "$colour" "$state")" \
    -filter Lanczos -resize "${size}x${size}" "PNG32:$out"
}

for state in ok cooling last down; do
  render 18 black "$state" "tray/tray-$state.png"
  render 36 black "$state" "tray/tray-$state@2x.png"
done
render 44 '#30b158' ok tray/tray-ok-color.png
render 44 '#f29d0a' cooling tray/tray-cooling-color.png
render 44 '#ef6c1a' last tray/tray-last-color.png
render 44 '#e5483d' down tray/tray-down-color.png

# App icon: the glyph in white on a rounded indigo-to-sky square (the macOS grid leaves
# ~10% margin around the square).
convert -size 1024x1024 gradient:'#4f46e5'-'#0ea5e9' \
  \( -size 1024x1024 xc:none -fill white -draw 'roundrectangle 100,100 924,924 185,185' \) \
  -compose DstIn -composite \
  \( -size 2048x2048 xc:none -draw "affine 4.4444,0,0,4.4444,384,384 $(glyph white ok)" -resize 1024x1024 \) \
  -compose Over -composite "PNG32:AppIcon.png"
echo "make-icons: wrote $(ls tray/*.png | wc -l) tray icons and AppIcon.png"
