#!/bin/sh
# Start Postfix in the foreground, set up for holdscan exactly as docs/install.md
# tells an administrator: the HOLD rule only on the public smtpd (rule 3).
# Safe to run at every start: every step sets a value, none appends.
set -eu

postconf -e \
    "myhostname = ${POSTFIX_MYHOSTNAME:-mail.example.com}" \
    "mydestination = ${POSTFIX_MYDESTINATION:-}" \
    "relayhost = ${POSTFIX_RELAYHOST:-}" \
    "mynetworks = ${POSTFIX_MYNETWORKS:-127.0.0.0/8}" \
    "inet_interfaces = all" \
    "maillog_file = /dev/stdout"
# No chroot in a container: the chroot would need its own copy of /etc.
postconf -F '*/*/chroot = n'

install -m 0644 /usr/share/holdscan/postfix/holdscan_hold_checks /etc/postfix/holdscan_hold_checks
postconf -P 'smtp/inet/cleanup_service_name=holdscan-cleanup'
postconf -M 'holdscan-cleanup/unix=holdscan-cleanup unix n - n - 0 cleanup'
postconf -P 'holdscan-cleanup/unix/header_checks=regexp:/etc/postfix/holdscan_hold_checks'

# Creates the queue directories on a fresh spool volume, with the right owners.
postfix check
exec postfix start-fg
