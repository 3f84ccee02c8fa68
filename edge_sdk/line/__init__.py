"""The line: a source, the Inspector and sinks run as one service (`edge-ad run`), with
its configuration (line.yaml), health endpoint and systemd notifications."""
