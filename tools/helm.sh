#!/usr/bin/env bash
# Build helm once from the Go module proxy into .cache/bin (git-ignored), for the chart
# checks of tools/deploy-check.sh and tests/deploy. Does nothing when it is there already.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELM_VERSION=${HELM_VERSION:-v3.22.0}
HELM=$ROOT/.cache/bin/helm

# Built as helm's Makefile does: the -X flags give `helm version` its version and make the
# Kubernetes version of helm's client libraries the default for lint and template (a bare
# `go install` leaves 1.20). The flags are stamped into the binary, so a build is reused
# only when it is of this version.
if [[ ! -x $HELM ]] || ! go version -m "$HELM" 2>/dev/null \
    | grep -q "internal/version.version=$HELM_VERSION "; then
  command -v go > /dev/null || { echo "go is needed to build helm" >&2; exit 1; }
  echo "building helm $HELM_VERSION from the Go module proxy into .cache/bin (a few minutes, once)"
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  k8s=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")
  [[ -n $k8s ]] || { echo "cannot tell helm's Kubernetes version from $gomod" >&2; exit 1; }
  GOBIN=$ROOT/.cache/bin GOFLAGS=-mod=mod go install -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
