#!/bin/sh
# Runs inside the fresh debootstrap tree (chroot) of the local base image, once.
# Makes it as lean as Debian's own slim images: no docs (copyright files stay, they
# are the licences), man pages, locales, apt lists or caches, and keeps later apt
# installs (the stand-in images) just as lean.
set -eu

cat > /etc/dpkg/dpkg.cfg.d/01-vyapaar-slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG

cat > /etc/apt/apt.conf.d/01-vyapaar-slim <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG

apt-get clean
find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/*
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old
find /var/log -type f -delete
rm -rf /tmp/* /var/tmp/* /root/.cache
# The build host's identity must not end up in the image (the runtime provides both).
rm -f /etc/hostname /etc/resolv.conf /etc/machine-id /var/lib/dbus/machine-id
