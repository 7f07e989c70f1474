#!/usr/bin/env bash
# A cron push: the exit code says what happened (see the README's exit-code table).
#
#   CRON_TZ=Asia/Shanghai
#   0 9 * * *  flock -n /tmp/ilinkbot-notify.lock /path/to/ilinkbot/examples/notify.sh
#
# On failure the message stays in the outbox: the next run (or `ilinkbot outbox retry ID`)
# sends it; a held message goes out when the user next writes to the bot.
set -u
ILINKBOT="${ILINKBOT:-$(dirname "$0")/../.venv/bin/ilinkbot}"
"$ILINKBOT" send --title "Nightly backup" "$(df -h / | tail -1)"
code=$?
case $code in
  0) ;;                                                       # delivered
  3) echo "held: goes out when the owner next writes" >&2 ;;
  4) echo "unconfirmed: accepted without a message id" >&2 ;;
  *) echo "ilinkbot send failed with exit code $code" >&2 ;;
esac
exit $code
