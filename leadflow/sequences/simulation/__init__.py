"""`leadflow simulate`: a campaign played before launch, on the real workflows and activities.

A script says what simulated leads do and when; the simulation runs it on the Temporal time-skipping server
(weeks pass in seconds), with a throwaway store and an SMTP server that keeps every email, then reads back
each lead's timeline (events, steps, branches, sends, exit) and the totals.

A script (YAML or JSON):

    lead: {first_name: Sam, timezone: Europe/Paris}   # properties of every simulated lead
    lead_overrides: {2: {phone: '+14155550100', push: true}}   # lead 2: a phone, a browser subscribed to push
    horizon: 30d                                      # how long to run (default: 30d)
    events:
      - {at: 0m, type: subscribed, properties: {channel: sms}, leads: [2]}    # lead 2's SMS consent
      - {at: 0m, type: form_started, properties: {form: demo}}
      - {at: 2d, type: form_submitted, properties: {form: demo}, share: 0.5}   # half of the leads do it
      - {at: 3d, type: unsubscribed, leads: [3]}                              # lead 3 only
      - {at: 1h, type: webinar_registered, dates: {starts_at: 12d}}          # starts_at: the start + 12 days

Modules: `script` (the script and the simulated leads), `player` (plays it on a running environment),
`timeline` (each lead's timeline and the totals, read back from the store) and `standalone` (the throwaway
store, SMTP sink and time-skipping server, in one process or several).
"""

from leadflow.sequences.simulation.player import SETTLE_TIMEOUT, SKIP_TIMEOUT, Simulation
from leadflow.sequences.simulation.script import (
    SIMULATED_DOMAIN,
    Script,
    ScriptEvent,
    load_script,
    simulated_email,
    simulated_subscription,
)
from leadflow.sequences.simulation.standalone import (
    LEADS_PER_PROCESS,
    MOST_PROCESSES,
    SHARE_EXIT_TIMEOUT,
    default_processes,
    merge_reports,
    prepare_player_process,
    quiet_temporal_core,
    simulate,
    smtp_sink,
    standalone,
    test_server_path,
)
from leadflow.sequences.simulation.timeline import LeadTimeline, SimulationReport, TimelineEntry, build_report

__all__ = [
    "LEADS_PER_PROCESS",
    "MOST_PROCESSES",
    "SETTLE_TIMEOUT",
    "SHARE_EXIT_TIMEOUT",
    "SIMULATED_DOMAIN",
    "SKIP_TIMEOUT",
    "LeadTimeline",
    "Script",
    "ScriptEvent",
    "Simulation",
    "SimulationReport",
    "TimelineEntry",
    "build_report",
    "default_processes",
    "load_script",
    "merge_reports",
    "prepare_player_process",
    "quiet_temporal_core",
    "simulate",
    "simulated_email",
    "simulated_subscription",
    "smtp_sink",
    "standalone",
    "test_server_path",
]
