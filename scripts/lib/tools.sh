# Shared by scripts/services, scripts/fuzz, scripts/check-deploy and
# scripts/test: where installed tools are cached, and how they are installed.
# Sourced, not run.

# Tools built or downloaded once live here, outside the clone.
TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/respawn/tools"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# `apt_install PACKAGE...`: Debian packages, without their recommends.
# scripts/test runs several installers side by side, so apt runs under a lock
# of ours (dpkg would refuse a second apt instead of waiting).
apt_install() {
  mkdir -p "$TOOLS_DIR"
  (
    flock 9
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  ) 9>"$TOOLS_DIR/apt.lock"
}

# `cargo_install_tool NAME VERSION ROOT [ARGS...]`: `cargo install` of a tool
# the tests run, into ROOT, saying how long it took.
#
# The tests need these tools to work, not to be fast, so by default they are
# built with a cheaper profile than the crate's release one: opt-level 1 and
# no debug information (the build is CPU-bound on two cores; the README
# gives the measured times). RESPAWN_TOOLS_PROFILE=release builds them as
# their authors ship them, into a directory of its own, for benchmarks
# (BENCHMARKS.md).
cargo_install_tool() {
  local name=$1 version=$2 root=$3 start profile
  shift 3
  profile=$(tools_profile)
  start=$(date +%s)
  if [ "$profile" = release ]; then
    cargo install --locked --quiet "$name" --version "$version" --root "$root" "$@"
  else
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_LTO=false \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      cargo install --locked --quiet "$name" --version "$version" --root "$root" "$@"
  fi
  echo "built $name $version ($profile profile) in $(($(date +%s) - start)) s"
}

# `test` (the default) or `release`: the profile cargo_install_tool builds with.
tools_profile() {
  case "${RESPAWN_TOOLS_PROFILE:-test}" in
    test | release) echo "${RESPAWN_TOOLS_PROFILE:-test}" ;;
    *)
      echo "RESPAWN_TOOLS_PROFILE must be test or release, not '$RESPAWN_TOOLS_PROFILE'" >&2
      return 2
      ;;
  esac
}
