# shellcheck shell=bash
# Local stand-ins for base images that cannot be pulled (no registry reachable), assembled from
# Debian packages with `apt-get download` + `dpkg -x` and imported as single-layer images.
# Sourced by scripts/images.sh and the container tests; each function prints the image name
# (tagged with a hash of its recipe, and also with the plain tag) and builds the image only
# when the engine does not have it yet: the cache across runs.
# Needs: $ENGINE (podman or docker), apt-get (Debian/Ubuntu; `apt-get update` done).

STANDINS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Every function writing into a root directory checks it first: an empty or wrong path here
# would write into the host's /etc.
scratch_dir() { # dir
  if [[ -z "$1" || "$1" == / || ! -d "$1" || "$1" != "${TMPDIR:-/tmp}"/* ]]; then
    echo "error: refusing to assemble an image in '$1' (not a fresh temporary directory)" >&2
    return 1
  fi
}

# Downloads PACKAGES... and unpacks them into ROOT (maintainer scripts are not run).
unpack_debs() { # root packages...
  local root=$1 debs
  shift
  scratch_dir "$root" || return 1
  debs=$(mktemp -d) || return 1
  # apt's download sandbox user must be able to write there.
  chmod 777 "$debs"
  # A machine whose package lists are missing or stale gets one `apt-get update`, then a retry.
  if ! (cd "$debs" && apt-get download -qq "$@" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$debs" && apt-get download -qq "$@" >/dev/null) \
      || { echo "error: apt-get download $* failed" >&2; rm -rf "$debs"; return 1; }
  fi
  local deb
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
  rm -rf "$debs"
}

# Imports the directory ROOT as IMAGE, with Dockerfile instructions CHANGES... applied.
import_root() { # root image changes...
  local root=$1 image=$2 args=()
  shift 2
  scratch_dir "$root" || return 1
  local change
  for change in "$@"; do args+=(--change "$change"); done
  local status=0
  tar --sort=name --numeric-owner --mtime=@0 -C "$root" -c . \
    | "$ENGINE" import "${args[@]}" - "$image" >/dev/null 2>&1 || status=$?
  rm -rf "${root:?}"
  [[ $status == 0 ]] || echo "error: importing $image failed" >&2
  return "$status"
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# NAME:TAG-<hash of this file and FILES...>: a changed recipe builds a new image instead of
# reusing the cached one. (Delete the engine's storage to pick up Debian updates as well.)
recipe_image() { # name:tag files...
  local image=$1 hash
  shift
  hash=$(cat "${BASH_SOURCE[0]}" "$@" | sha256sum | cut -c1-12)
  echo "$image-$hash"
}

# After IMAGE (NAME:TAG-HASH) is built: NAME:TAG points at it and older recipes are removed.
settle_image() { # image
  local image=$1 old
  "$ENGINE" tag "$image" "${image%-*}" || return 1
  for old in $("$ENGINE" images --format '{{.Repository}}:{{.Tag}}' "${image%:*}"); do
    [[ "$old" == "$image" || "$old" == "${image%-*}" ]] || "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
  done
}

# The runtime base: the layout of gcr.io/distroless/cc-debian12:nonroot. glibc, libgcc and CA
# certificates, users root and nonroot (65532), /tmp; no shell, no package manager.
runtime_base() {
  local image
  image=$(recipe_image localhost/paysys-base/cc-debian12:nonroot)
  if ! image_exists "$image"; then
    echo "assembling $image from Debian packages" >&2
    local root
    root=$(mktemp -d) || return 1
    unpack_debs "$root" libc6 libgcc-s1 ca-certificates || return 1
    # Only shared libraries and certificates: no gconv modules, scripts or manuals.
    rm -rf "${root:?}"/usr/lib/x86_64-linux-gnu/gconv "${root:?}"/usr/sbin "${root:?}"/usr/bin \
      "${root:?}"/sbin "${root:?}"/usr/share/man "${root:?}"/usr/share/lintian \
      "${root:?}"/usr/share/locale "${root:?}"/usr/libexec "${root:?}"/etc/ca-certificates \
      "${root:?}"/usr/share/doc/*/changelog*
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
    # The bundle update-ca-certificates would make; the single certificates are not needed.
    cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root/usr/share/ca-certificates"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
      >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    chmod 1777 "$root/tmp"
    chown 65532:65532 "$root/home/nonroot"
    import_root "$root" "$image" "USER 65532:65532" "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" || return 1
    settle_image "$image" || return 1
  fi
  echo "$image"
}

# Unpacks PACKAGES... with every dependency except those matching EXCLUDE (an extended
# regular expression) into ROOT.
debian_root() { # root exclude packages...
  local root=$1 exclude=$2 list
  shift 2
  scratch_dir "$root" || return 1
  # No package lists yet (a fresh machine): fetch them once.
  apt-cache show "$1" >/dev/null 2>&1 || apt-get update -qq >/dev/null 2>&1 || true
  list=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" | grep '^[a-z0-9]' | grep -Ev "^($exclude)\$" | sort -u) || return 1
  # shellcheck disable=SC2086 # one word per package
  unpack_debs "$root" $list || return 1
  # Debian's merged /usr, as an installed system has it.
  local dir
  for dir in bin sbin lib lib64; do
    if [[ -d "$root/$dir" && ! -L "$root/$dir" ]]; then
      mkdir -p "$root/usr/$dir"
      cp -a "$root/$dir/." "$root/usr/$dir/"
      rm -rf "${root:?}/$dir"
    fi
    ln -sfn "usr/$dir" "$root/$dir"
  done
  rm -rf "${root:?}"/usr/share/doc "${root:?}"/usr/share/man "${root:?}"/usr/share/locale
  mkdir -p "$root/tmp" "$root/run" "$root/usr/local/bin"
  chmod 1777 "$root/tmp"
}

# PostgreSQL 15 from Debian, configured like the official postgres image (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; pg_isready on PATH). Has a shell: only a stand-in.
postgres_standin() {
  local image
  image=$(recipe_image localhost/paysys-standin/postgres:15 "$STANDINS_DIR/postgres-entrypoint.sh")
  if ! image_exists "$image"; then
    echo "assembling $image from Debian packages" >&2
    local root
    root=$(mktemp -d) || return 1
    # Not needed to serve: all locales (C is built in), LLVM for JIT (off without it),
    # the perl of Debian's cluster wrappers (the entrypoint calls initdb and postgres).
    debian_root "$root" 'locales-all|locales|libc-l10n|libllvm.*|libz3-.*|perl|perl-modules-.*|libperl.*|install-info' \
      postgresql-15 bash dash coreutils util-linux || return 1
    rm -f "$root"/usr/lib/postgresql/15/lib/llvmjit*
    printf 'root:x:0:0:root:/root:/bin/bash\npostgres:x:999:999::/var/lib/postgresql:/bin/bash\n' >"$root/etc/passwd"
    printf 'root:x:0:\npostgres:x:999:\n' >"$root/etc/group"
    install -D -m 755 "$STANDINS_DIR/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    import_root "$root" "$image" \
      "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      "ENV PGDATA=/var/lib/postgresql/data" \
      'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' || return 1
    settle_image "$image" || return 1
  fi
  echo "$image"
}

# RabbitMQ from Debian, configured like the official rabbitmq image (RABBITMQ_DEFAULT_USER,
# RABBITMQ_DEFAULT_PASS, RABBITMQ_NODENAME, RABBITMQ_NODE_PORT; rabbitmq-diagnostics).
rabbitmq_standin() {
  local image
  image=$(recipe_image localhost/paysys-standin/rabbitmq:3 "$STANDINS_DIR/rabbitmq-entrypoint.sh")
  if ! image_exists "$image"; then
    echo "assembling $image from Debian packages" >&2
    local root
    root=$(mktemp -d) || return 1
    debian_root "$root" 'locales-all|locales|libc-l10n|install-info|erlang-dev|erlang-src|.*-doc' \
      rabbitmq-server bash dash coreutils util-linux || return 1
    printf 'root:x:0:0:root:/root:/bin/bash\nrabbitmq:x:999:999::/var/lib/rabbitmq:/bin/bash\n' >"$root/etc/passwd"
    printf 'root:x:0:\nrabbitmq:x:999:\n' >"$root/etc/group"
    install -D -m 755 "$STANDINS_DIR/rabbitmq-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    import_root "$root" "$image" \
      "ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      "ENV HOME=/var/lib/rabbitmq" \
      'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' || return 1
    settle_image "$image" || return 1
  fi
  echo "$image"
}
