#!/bin/sh
# paydbox fleet PKI: a private CA, the broker certificate, one client certificate per box, the
# service identities, and the certificate revocation list (CRL) the broker checks.
#
#   deploy/make-certs.sh OUTDIR BROKER_HOST_OR_IP FLEET/DEVICE [FLEET/DEVICE ...]   box certificates
#   deploy/make-certs.sh OUTDIR BROKER_HOST_OR_IP --service ingest|ops [...]        service certificates
#   deploy/make-certs.sh OUTDIR --revoke FLEET/DEVICE|SERVICE [...]                 revoke, rewrite crl.pem
#   deploy/make-certs.sh OUTDIR --crl                                               re-sign crl.pem (cron it)
#
# Identity = certificate CN, which Mosquitto uses as the username (`use_identity_as_username true`;
# the ACL's %u). A box's CN is "FLEET/DEVICE", so the ACL pattern paydbox/%u/... binds both the fleet
# and the device to what the broker authenticated. Service CNs have no "/" and only the reserved
# names `ingest` and `ops` are issued; a box CN always has one "/", so no box certificate can carry a
# service identity, and no service certificate a box's. Files: FLEET.DEVICE.crt/.key, ingest.crt/.key.
# Existing CA files in OUTDIR are reused (devices can be added later). Keys are mode 600.
set -eu
usage() { echo "usage: $0 OUTDIR BROKER_HOST FLEET/DEVICE... | OUTDIR BROKER_HOST --service NAME... | OUTDIR --revoke ID... | OUTDIR --crl" >&2; exit 2; }
[ $# -ge 2 ] || usage
out=$1; shift
days=${CERT_DAYS:-3650}
crl_days=${CRL_DAYS:-365}
mkdir -p "$out"; cd "$out"
umask 077
RESERVED="ingest ops"

ca_conf() {  # openssl ca's database: issued serials, revocations
  [ -f index.txt ] || : > index.txt
  [ -f crlnumber ] || echo 1000 > crlnumber
  cat > ca.cnf <<EOF
[ ca ]
default_ca = paydbox
[ paydbox ]
database = index.txt
crlnumber = crlnumber
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = $crl_days
EOF
}

gen_crl() {
  ca_conf
  openssl ca -config ca.cnf -gencrl -out crl.pem 2>/dev/null
  chmod 644 crl.pem
}

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$days" \
    -subj "/CN=paydbox fleet CA" 2>/dev/null
fi

file_of() { echo "$1" | tr / .; }  # FLEET/DEVICE -> FLEET.DEVICE (file name)

case "$1" in
  --crl)
    gen_crl; echo "crl.pem re-signed (next update in $crl_days days)"; exit 0 ;;
  --revoke)
    shift; [ $# -ge 1 ] || usage
    ca_conf
    for id in "$@"; do
      f=$(file_of "$id").crt
      [ -f "$f" ] || { echo "no certificate $f for $id in $out" >&2; exit 2; }
      openssl ca -config ca.cnf -revoke "$f" 2>/dev/null || { echo "revoke failed for $id" >&2; exit 1; }
    done
    gen_crl
    echo "revoked: $*; crl.pem rewritten: copy it to the broker and reload it (systemctl reload mosquitto)"
    exit 0 ;;
esac

host=$1; shift
[ $# -ge 1 ] || usage
case "$host" in
  *[!0-9.]*) san="DNS:$host" ;;
  *) san="IP:$host" ;;
esac
if [ ! -f server.key ]; then
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=$host" 2>/dev/null
  printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san" > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days "$days" -extfile server.ext 2>/dev/null
  rm -f server.csr server.ext
fi

client_cert() {  # $1 CN, $2 file stem
  openssl req -newkey rsa:2048 -nodes -keyout "$2.key" -out "$2.csr" -subj "/CN=$(echo "$1" | sed 's#/#\\/#g')" 2>/dev/null
  printf "extendedKeyUsage=clientAuth\n" > "$2.ext"
  openssl x509 -req -in "$2.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$2.crt" \
    -days "$days" -extfile "$2.ext" 2>/dev/null
  rm -f "$2.csr" "$2.ext"
}

made=""
if [ "$1" = "--service" ]; then
  shift; [ $# -ge 1 ] || usage
  for svc in "$@"; do
    case " $RESERVED " in *" $svc "*) ;; *) echo "unknown service $svc (services: $RESERVED)" >&2; exit 2 ;; esac
    client_cert "$svc" "$svc"; made="$made $svc.crt"
  done
else
  for id in "$@"; do
    fleet=${id%%/*}; dev=${id#*/}
    case "$id" in
      */*/*|/*|*/) echo "bad box identity $id: FLEET/DEVICE, one '/'" >&2; exit 2 ;;
      */*) ;;
      *) echo "bad box identity $id: FLEET/DEVICE (a box certificate always names its fleet)" >&2; exit 2 ;;
    esac
    for part in "$fleet" "$dev"; do
      case "$part" in ''|*[!A-Za-z0-9_-]*) echo "bad box identity $id: fleet and device are A-Z a-z 0-9 _ - only" >&2; exit 2 ;; esac
    done
    client_cert "$id" "$(file_of "$id")"; made="$made $(file_of "$id").crt"
  done
fi
[ -f crl.pem ] || gen_crl
chmod 644 ca.crt server.crt crl.pem 2>/dev/null || true
echo "certificates in $out: ca.crt server.crt/key crl.pem$made"
