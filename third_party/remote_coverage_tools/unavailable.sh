#!/bin/sh
# Offline stub: the real coverage tools are not available in this build.
echo "remote_coverage_tools stub: coverage merging/reporting is unavailable offline" >&2
exit 0
