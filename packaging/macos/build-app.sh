#!/usr/bin/env bash
# Builds "LLM Rotator.app" and a release zip (plus a filled-in Homebrew cask) in target/macos/.
#
#   packaging/macos/build-app.sh [--host-binary PATH] [--skip-sign] [--assets DIR] [--out DIR]
#
# On macOS it builds the release binary for every installed Apple target
# (aarch64-apple-darwin, x86_64-apple-darwin), joins them into one universal binary with
# `lipo` when both are there, assembles the bundle, signs it and zips it:
#
#   Contents/MacOS/llm-rotator         the binary
#   Contents/Info.plist                the repo's Info.plist (its version must equal Cargo.toml's)
#   Contents/PkgInfo
#   Contents/Resources/AppIcon.icns    made from assets/AppIcon.png (1024x1024)
#   Contents/Resources/*.png           the tray icons (every other PNG in assets/ and assets/tray/)
#
# Signing: ad hoc (`codesign --sign -`) by default, enough to run on the machine that built
# it. For a release others download, sign with a Developer ID and notarize:
#
#   CODESIGN_IDENTITY="Developer ID Application: Your Name (TEAMID)" \
#   NOTARY_PROFILE=llm-rotator-notary \
#   packaging/macos/build-app.sh
#
# where NOTARY_PROFILE names credentials stored once with
# `xcrun notarytool store-credentials llm-rotator-notary --apple-id ... --team-id ...`.
# The app is then signed with the hardened runtime and a timestamp, the zip is submitted
# with `xcrun notarytool submit --wait`, the ticket is stapled to the app and the zip is
# made again.
#
# Homebrew: the cask template packaging/homebrew/llm-rotator.rb is written to the output
# dir with the version, the zip's sha256 and its URL: RELEASE_URL (the download URL of
# the zip; default: a file:// URL of the local zip, for `brew install --cask ./llm-rotator.rb`)
# and HOMEPAGE (optional).
#
# On Linux (or with --host-binary) it skips the build and uses the given binary, so the
# bundle's tree, plist, icon and zip can be checked anywhere; signing needs macOS.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
host_binary=""
skip_sign=0
assets="$repo/assets"
out="$repo/target/macos"

die() { echo "build-app.sh: $*" >&2; exit 1; }
say() { echo "== $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --host-binary) host_binary="${2:?--host-binary needs a path}"; shift 2 ;;
    --skip-sign) skip_sign=1; shift ;;
    --assets) assets="${2:?--assets needs a dir}"; shift 2 ;;
    --out) out="${2:?--out needs a dir}"; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v python3 >/dev/null 2>&1 || die "python3 is needed (plist check, icon and zip)"
darwin=0; [ "$(uname -s)" = Darwin ] && darwin=1

plist_get() { # key file
  python3 -c 'import plistlib,sys; print(plistlib.load(open(sys.argv[2],"rb"))[sys.argv[1]])' "$1" "$2"
}

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
[ -n "$version" ] || die "cannot read the version from Cargo.toml"
for key in CFBundleShortVersionString CFBundleVersion; do
  v="$(plist_get "$key" "$repo/Info.plist")"
  [ "$v" = "$version" ] || die "Info.plist $key is $v but Cargo.toml says $version; update Info.plist"
done

# --- the binary ---------------------------------------------------------------------------
mkdir -p "$out"
if [ -n "$host_binary" ]; then
  [ -x "$host_binary" ] || die "--host-binary $host_binary is not an executable file"
  binary="$host_binary"
else
  [ "$darwin" = 1 ] || die "building the macOS binary needs macOS; on Linux pass --host-binary PATH"
  built=()
  installed="$(rustup target list --installed 2>/dev/null || true)"
  for t in aarch64-apple-darwin x86_64-apple-darwin; do
    if grep -qx "$t" <<<"$installed"; then
      say "cargo build --release --target $t"
      (cd "$repo" && cargo build --release --locked --target "$t")
      built+=("$repo/target/$t/release/llm-rotator")
    fi
  done
  if [ ${#built[@]} -eq 2 ]; then
    say "lipo: one universal binary (arm64 + x86_64)"
    lipo -create -output "$out/llm-rotator" "${built[@]}"
    binary="$out/llm-rotator"
  elif [ ${#built[@]} -eq 1 ]; then
    binary="${built[0]}"
  else
    say "cargo build --release (host target only)"
    (cd "$repo" && cargo build --release --locked)
    binary="$repo/target/release/llm-rotator"
  fi
fi

# --- the bundle ---------------------------------------------------------------------------
app="$out/LLM Rotator.app"
say "assembling $app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
cp "$binary" "$app/Contents/MacOS/llm-rotator"
chmod 755 "$app/Contents/MacOS/llm-rotator"
cp "$repo/Info.plist" "$app/Contents/Info.plist"
printf 'APPL????' > "$app/Contents/PkgInfo"

# AppIcon.icns: an 'icns' header, then one entry per size (type, length, PNG data).
icon="$assets/AppIcon.png"
[ -f "$icon" ] || die "$icon is missing (a 1024x1024 PNG)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
entries=()
for pair in ic07:128 ic08:256 ic09:512 ic10:1024; do
  type="${pair%%:*}"; size="${pair##*:}"
  png="$work/$size.png"
  if [ "$darwin" = 1 ]; then
    sips -z "$size" "$size" "$icon" --out "$png" >/dev/null
  elif command -v magick >/dev/null 2>&1; then
    magick "$icon" -resize "${size}x${size}" "$png"
  elif command -v convert >/dev/null 2>&1; then
    convert "$icon" -resize "${size}x${size}" "$png"
  else
    [ "$size" = 1024 ] || continue # no resizer: the 1024 image alone
    cp "$icon" "$png"
  fi
  entries+=("$type=$png")
done
python3 - "$app/Contents/Resources/AppIcon.icns" "${entries[@]}" <<'PY'
import struct, sys
entries = []
for arg in sys.argv[2:]:
    kind, path = arg.split("=", 1)
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path} is not a PNG")
    entries.append(kind.encode("ascii") + struct.pack(">I", len(data) + 8) + data)
body = b"".join(entries)
with open(sys.argv[1], "wb") as f:
    f.write(b"icns" + struct.pack(">I", len(body) + 8) + body)
PY

# Tray icons: every other PNG in assets/ and assets/tray/.
shopt -s nullglob
for f in "$assets"/*.png "$assets"/tray/*.png; do
  [ "$(basename "$f")" = AppIcon.png ] && continue
  cp "$f" "$app/Contents/Resources/"
done
shopt -u nullglob

# --- signing ------------------------------------------------------------------------------
identity="${CODESIGN_IDENTITY:--}"
if [ "$skip_sign" = 1 ]; then
  say "not signing (--skip-sign)"
elif [ "$darwin" = 0 ]; then
  say "not signing (codesign needs macOS)"
elif [ "$identity" = "-" ]; then
  say "codesign: ad hoc"
  codesign --force --sign - "$app"
  codesign --verify --strict "$app"
else
  say "codesign: $identity (hardened runtime)"
  codesign --force --options runtime --timestamp --sign "$identity" "$app"
  codesign --verify --strict "$app"
fi

# --- zip ----------------------------------------------------------------------------------
zip_name="LLM-Rotator-$version-macos.zip"
make_zip() {
  rm -f "$out/$zip_name"
  if [ "$darwin" = 1 ]; then
    ditto -c -k --sequesterRsrc --keepParent "$app" "$out/$zip_name"
  else
    (cd "$out" && python3 -m zipfile -c "$zip_name" "LLM Rotator.app")
  fi
}
make_zip
if [ "$darwin" = 1 ] && [ "$skip_sign" = 0 ] && [ "$identity" != "-" ] && [ -n "${NOTARY_PROFILE:-}" ]; then
  say "notarizing with the keychain profile $NOTARY_PROFILE"
  xcrun notarytool submit "$out/$zip_name" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$app"
  make_zip
fi

# --- Homebrew cask ------------------------------------------------------------------------
if command -v shasum >/dev/null 2>&1; then
  sha="$(shasum -a 256 "$out/$zip_name" | cut -d' ' -f1)"
else
  sha="$(sha256sum "$out/$zip_name" | cut -d' ' -f1)"
fi
url="${RELEASE_URL:-file://$out/$zip_name}"
python3 - "$repo/packaging/homebrew/llm-rotator.rb" "$out/llm-rotator.rb" \
  "$version" "$sha" "$url" "${HOMEPAGE:-}" <<'PY'
import sys
src, dst, version, sha, url, homepage = sys.argv[1:7]
text = open(src).read()
text = text.replace("@VERSION@", version).replace("@SHA256@", sha).replace("@URL@", url)
if homepage:
    text = text.replace("@HOMEPAGE@", homepage)
else:
    text = "".join(l for l in text.splitlines(True) if not l.strip().startswith('homepage "@HOMEPAGE@"'))
open(dst, "w").write(text)
PY

say "done"
echo "app:  $app"
echo "zip:  $out/$zip_name"
echo "sha256: $sha"
echo "cask: $out/llm-rotator.rb"
