"""``iotsec ota release`` and ``ota campaign``: the published releases, and the rollout
campaigns that install them."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.ota import campaigns as ota
from iotsec.app.ota.campaigns import CampaignInfo
from iotsec.app.ota.releases import list_releases
from iotsec.app.ota.tick import tick
from iotsec.app.wire.ota import CampaignDeviceOut, CampaignOut, ReleaseOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, plural, table, when
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan
from iotsec.firmware.image import ImageVersion
from iotsec.timeutil import parse_duration

__all__ = [
    "CampaignId", "campaign_abort", "campaign_app", "campaign_create", "campaign_devices",
    "campaign_list", "campaign_pause", "campaign_resume", "campaign_status", "campaign_tick",
    "release_app", "release_list"
]

campaign_app = typer.Typer(help="Rollout campaigns.", no_args_is_help=True)
release_app = typer.Typer(help="Published releases.", no_args_is_help=True)


@release_app.command("list")
def release_list(
    product: Annotated[str | None, typer.Option(help="Only this product.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every publication of a release to a channel, oldest first."""
    with runtime() as rt:
        found = list_releases(rt, product)
    if as_json:
        emit_json([ReleaseOut.from_domain(r) for r in found])
        return
    table("Releases", ["id", "product", "channel", "version", "counter", "hardware",
                       "published"],
          [(r.id, r.product, r.channel, r.version, r.security_counter, ", ".join(r.hardware),
            when(r.published_at)) for r in found])


# --------------------------------------------------------------------------- campaigns


def _show(c: CampaignInfo, as_json: bool) -> None:
    if as_json:
        emit_json(CampaignOut.from_domain(c))
        return
    console.print(f"Campaign {c.id} {c.name!r}: {c.state.value}"
                  + (f" ({c.reason})" if c.reason else ""), markup=False, soft_wrap=True)
    console.print(f"  release {c.release.product} {c.release.version} ({c.release.target}); "
                  f"{plural(c.totals.size, 'device')}; wave {c.current_wave + 1} of "
                  f"{len(c.plan.waves)} "
                  f"since {when(c.wave_started_at)}", markup=False, soft_wrap=True)
    columns = [s.value for s in DeviceStatus]
    table(None, ["wave", "upto %", *columns],
          [(i + 1, pct, *(w.counts.get(DeviceStatus(s), 0) for s in columns))
           for i, (pct, w) in enumerate(zip(c.plan.waves, c.waves, strict=True))])


CampaignId = Annotated[int, typer.Argument(metavar="ID", help="Campaign id.")]


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option("--name")],
    product: Annotated[str, typer.Option("--product")],
    version: Annotated[str | None, typer.Option("--version", help="Release version (default: "
                                                "what --channel serves).")] = None,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Target a device group.")
                     ] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="Target a device "
                                                     "(repeatable).")] = None,
    waves: Annotated[str, typer.Option("--waves", help="Cumulative percentages.")] = "100",
    failure_threshold: Annotated[float, typer.Option(
        "--failure-threshold", help="Pause when this percent of a wave fails.")] = 5.0,
    device_timeout: Annotated[str, typer.Option("--device-timeout")] = "24h",
    soak: Annotated[str, typer.Option("--soak", help="Wait after a finished wave.")] = "0s",
    as_json: JsonOpt = False,
) -> None:
    """Create and start a rollout campaign."""
    plan = Plan(waves=Plan.parse_waves(waves), failure_threshold=failure_threshold / 100,
                device_timeout=parse_duration(device_timeout), soak=parse_duration(soak))
    with runtime() as rt:
        info = ota.create_campaign(rt, name=name, product=product, plan=plan,
                                   version=ImageVersion.parse(version) if version else None,
                                   channel=channel, group=group, devices=device,
                                   actor="cli")
    _show(info, as_json)


@campaign_app.command("list")
def campaign_list(
    state: Annotated[str | None, typer.Option(help="active, paused, aborted, completed")
                     ] = None,
    as_json: JsonOpt = False,
) -> None:
    with runtime() as rt:
        found = ota.list_campaigns(rt, CampaignState(state) if state else None)
    if as_json:
        emit_json([CampaignOut.from_domain(c) for c in found])
        return
    table("Campaigns", ["id", "name", "state", "release", "devices", "wave", "installed",
                        "failed"],
          [(c.id, c.name, c.state.value, f"{c.release.product} {c.release.version}",
            c.totals.size, f"{c.current_wave + 1}/{len(c.plan.waves)}",
            c.totals.of(DeviceStatus.INSTALLED), c.totals.failures) for c in found])


@campaign_app.command("status")
def campaign_status(campaign_id: CampaignId, as_json: JsonOpt = False) -> None:
    """A campaign's state and per-wave progress (evaluated now: timeouts, waves)."""
    with runtime() as rt:
        info = ota.get_campaign(rt, campaign_id)
    _show(info, as_json)


@campaign_app.command("devices")
def campaign_devices(
    campaign_id: CampaignId,
    status: Annotated[str | None, typer.Option(help="Only devices in this status.")] = None,
    limit: Annotated[int, typer.Option()] = 1000,
    as_json: JsonOpt = False,
) -> None:
    with runtime() as rt:
        found = ota.campaign_devices(rt, campaign_id,
                                     status=DeviceStatus(status) if status else None,
                                     limit=limit)
    if as_json:
        emit_json([CampaignDeviceOut.from_domain(d) for d in found])
        return
    table(f"Campaign {campaign_id}", ["device", "wave", "status", "version", "updated",
                                      "detail"],
          [(d.device_id, d.wave + 1, d.status.value, d.version, when(d.updated_at), d.detail)
           for d in found])


@campaign_app.command("pause")
def campaign_pause(campaign_id: CampaignId,
                   reason: Annotated[str | None, typer.Option()] = None,
                   as_json: JsonOpt = False) -> None:
    with runtime() as rt:
        _show(ota.pause_campaign(rt, campaign_id, actor="cli", reason=reason), as_json)


@campaign_app.command("resume")
def campaign_resume(campaign_id: CampaignId, as_json: JsonOpt = False) -> None:
    """Resume a paused campaign (the current wave's failures so far are acknowledged)."""
    with runtime() as rt:
        _show(ota.resume_campaign(rt, campaign_id, actor="cli"), as_json)


@campaign_app.command("abort")
def campaign_abort(campaign_id: CampaignId,
                   reason: Annotated[str | None, typer.Option()] = None,
                   as_json: JsonOpt = False) -> None:
    """Stop a campaign for good; devices that have not started are cancelled."""
    with runtime() as rt:
        _show(ota.abort_campaign(rt, campaign_id, actor="cli", reason=reason), as_json)


@campaign_app.command("tick")
def campaign_tick(as_json: JsonOpt = False) -> None:
    """Evaluate every running campaign now (run it from cron to notice timeouts)."""
    with runtime() as rt:
        done = tick(rt)
    if as_json:
        emit_json({str(k): v for k, v in done.items()})
        return
    for campaign_id, changes in done.items():
        for change in changes:
            console.print(f"campaign {campaign_id}: {change}", markup=False, soft_wrap=True)
