#!/usr/bin/env bash
# The Debian packages the test suite runs against, installed when missing.
#
# As root it installs them with apt-get; as anyone else it prints the one
# apt-get line to run and exits 1, so `make test` stops before a test
# fails for a missing server.
set -euo pipefail

# command:package pairs.  systemd-analyze checks the unit file, node with
# npm runs an independent Riemann client against duct, prometheus scrapes
# /metrics, headless chromium with its driver opens the dashboard, and
# nginx serves the stub_status page the nginx source reads, sshd is the
# remote host the SSH checks run on, ping is what the Ping check runs;
# prometheus also receives remote writes, influxd stores what the
# InfluxDB output writes, carbon-cache (with its whisper module) takes
# the Graphite output's lines and pickles, victoria-metrics takes the
# OpenTSDB output's /api/put; apache2 serves mod_status, haproxy its
# stats CSV and prometheus-node-exporter an exposition page for the
# scrape source; redis-server, memcached, postgres, mariadbd and
# rabbitmq-server are what the database and queue sources read; the
# Nagios plugins are what the Command check runs unchanged; munin-node,
# snmpd, unbound (with unbound-control) and postfix are the servers their
# sources read (postfix also takes the mail checks' messages, and dovecot
# serves them back over IMAP); uwsgi, with its Python 3 plugin for the
# vassal's app, is the Emperor whose stats the uWSGI source reads;
# sensors (lm-sensors) and smartctl (smartmontools) are what the hardware
# sources run, here finding nothing to read; charon, swanctl and ipsec are
# the strongSwan the IPsec source asks, with a tunnel to itself;
# pmacctd (with its sfprobe plugin) is the sFlow agent that samples
# traffic on lo for the sFlow collector; dockerd runs busybox containers
# (an image imported from busybox-static, as no registry is reachable)
# for the Docker source.
wanted=(
    systemd-analyze:systemd
    chromium:chromium
    chromedriver:chromium-driver
    node:nodejs
    npm:npm
    prometheus:prometheus
    nginx:nginx
    sshd:openssh-server
    influxd:influxdb
    ping:iputils-ping
    carbon-cache:graphite-carbon
    victoria-metrics:victoria-metrics
    apache2:apache2
    haproxy:haproxy
    prometheus-node-exporter:prometheus-node-exporter
    redis-server:redis-server
    memcached:memcached
    /usr/lib/postgresql/15/bin/postgres:postgresql
    mariadbd:mariadb-server
    rabbitmq-server:rabbitmq-server
    /usr/lib/nagios/plugins/check_load:monitoring-plugins
    munin-node:munin-node
    snmpd:snmpd
    unbound:unbound
    postfix:postfix
    sensors:lm-sensors
    smartctl:smartmontools
    /usr/lib/ipsec/charon:strongswan-charon
    swanctl:strongswan-swanctl
    ipsec:strongswan-starter
    dovecot:dovecot-imapd
    uwsgi:uwsgi
    uwsgi_python3:uwsgi-plugin-python3
    pmacctd:pmacct
    dockerd:docker.io
    busybox:busybox-static
)

need=()
for pair in "${wanted[@]}"; do
    command=${pair%%:*}
    package=${pair#*:}
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
        need+=("$package")
    fi
done
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "The tests need these Debian packages; install them first:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing Debian packages for the tests: ${need[*]}"
apt-get update -qq
# The tests start their own servers on free ports; the packaged daemons
# (unbound on port 53, postfix on 25, ...) must not start and take ports or
# the machine's resolver.  policy-rc.d exit 101 forbids it during the install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
