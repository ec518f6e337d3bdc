#!/bin/sh
# Starts one Galera node. A node with an empty data directory is initialised first; only the node
# named by GALERA_BOOTSTRAP_NODE, and only then, starts a new cluster (--wsrep-new-cluster) and sets
# the root and SST passwords; every other start joins the cluster. Passwords come from the
# environment and reach mariadbd through an init file in the container, never a command line.
set -eu
datadir=/var/lib/mysql
# Root may log in from the private network (GALERA_CLIENTS, a range such as 10.0.0.0/16), which
# MariaDB writes as ADDRESS/NETMASK.
net=${GALERA_CLIENTS%/*}
bits=${GALERA_CLIENTS#*/}
mask=""
for _ in 1 2 3 4; do
  if [ "$bits" -ge 8 ]; then octet=255; bits=$((bits - 8)); else octet=$(((256 - (1 << (8 - bits))) % 256)); bits=0; fi
  mask="$mask${mask:+.}$octet"
done
clients="$net/$mask"
new=""
pending="$datadir/.kz-bootstrap-pending"
if [ ! -d "$datadir/mysql" ]; then
  mariadb-install-db --user=mysql --datadir="$datadir" >/dev/null
  if [ "$GALERA_NODE" = "$GALERA_BOOTSTRAP_NODE" ]; then touch "$pending"; fi
fi
# The bootstrap node starts a new cluster until it has served once (a first start that failed
# is tried again as a bootstrap, not as a join of a cluster nobody started).
if [ -f "$pending" ]; then
  new="--wsrep-new-cluster"
  # The passwords stay readable by mysql only, and the file goes once the server has read it.
  (umask 077; : > /tmp/init.sql)
  cat > /tmp/init.sql <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '$MARIADB_ROOT_PASSWORD';
CREATE USER IF NOT EXISTS 'root'@'$clients' IDENTIFIED BY '$MARIADB_ROOT_PASSWORD';
GRANT ALL ON *.* TO 'root'@'$clients' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'sst'@'localhost' IDENTIFIED BY '$MARIADB_SST_PASSWORD';
GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'sst'@'localhost';
SQL
  chown mysql /tmp/init.sql
  new="$new --init-file=/tmp/init.sql"
  # `ping` answers once the server runs (even when access is denied): then it has served. No
  # time limit of its own: a bootstrap slower than any limit must not leave the marker behind (the
  # next start would found a second cluster); the container's life bounds this loop, since the
  # loop dies with the container when mariadbd exits.
  (
    until mariadb-admin --protocol=socket ping >/dev/null 2>&1; do sleep 1; done
    rm -f "$pending" /tmp/init.sql
  ) &
fi
# The server's socket directory (systemd's tmpfiles make it on a host; here, nobody).
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
chown -R mysql:mysql "$datadir"
exec mariadbd --user=mysql $new
