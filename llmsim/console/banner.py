"""The start-up panel: what is being simulated and how to talk to it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from llmsim import __version__
from llmsim.settings.data_parallel import data_parallel_layout
from llmsim.settings.instances import Instance
from llmsim.settings.model import Settings
from llmsim.settings.tls import self_signed_ca, tls_enabled
from llmsim.settings.units import format_duration


def _latency(mean: float, std_dev: float) -> str:
    text = format_duration(mean)
    return f"{text} ± {format_duration(std_dev)}" if std_dev else text


def _step_timing(settings: Settings) -> str:
    """The step model's formula terms that are set, and the KV cache in blocks."""
    parts = [
        f"step ITL {_latency(settings.inter_token_latency, settings.inter_token_latency_std_dev)}"
    ]
    for field, label in (
        ("decode_time_per_sequence", "/extra sequence"),
        ("prefill_time_per_token", "/prompt token"),
        ("context_time_per_token", "/context token"),
    ):
        value = getattr(settings, field)
        if value:
            parts.append(f"+ {format_duration(value)}{label}")
    if settings.frontend_latency:
        parts.append(f"(+ {format_duration(settings.frontend_latency)} front end per request)")
    blocks = -(-settings.kv_cache_size // settings.block_size)
    caching = "on" if settings.enable_prefix_caching else "off"
    return (
        " ".join(parts)
        + f"; budget {settings.max_num_batched_tokens} tokens/step, KV {blocks} blocks of "
        f"{settings.block_size}, prefix caching {caching}"
    )


def _short_timing(settings: Settings) -> str:
    """For the one-row-per-instance table: the step model's ITL only."""
    if settings.latency_model == "step":
        itl = _latency(settings.inter_token_latency, settings.inter_token_latency_std_dev)
        return f"step, ITL {itl}"
    return _timing(settings)


def _timing(settings: Settings) -> str:
    if settings.latency_model == "step":
        return _step_timing(settings)
    ttft_jitter = settings.time_to_first_token_std_dev
    if settings.latency_model == "per-token":
        first = (
            f"TTFT {format_duration(settings.frontend_latency + settings.inter_token_latency)}"
            f" + {format_duration(settings.prefill_time_per_token)}/prompt token"
            + (f" ± {format_duration(ttft_jitter)}" if ttft_jitter else "")
        )
    else:
        first = f"TTFT {_latency(settings.time_to_first_token, ttft_jitter)}"
    itl = _latency(settings.inter_token_latency, settings.inter_token_latency_std_dev)
    factor = settings.time_factor_under_load
    return f"{first}, ITL {itl}" + (f", ×{factor:g} under load" if factor > 1 else "")


def base_url(settings: Settings, port: int) -> str:
    """The URL clients use; over ``--uds`` the one they send through the socket."""
    scheme = "https" if tls_enabled(settings) else "http"
    if settings.uds is not None:
        return f"{scheme}://localhost"
    return f"{scheme}://{_address(settings, port)}"


def _address(settings: Settings, port: int) -> str:
    """``host:port`` a client on this machine reaches the server's TCP port at."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def _tls_notes(settings: Settings) -> list[str]:
    """HTTPS details worth a line: client certificates, refresh, a made CA's file."""
    if not tls_enabled(settings):
        return []
    notes = []
    if settings.ssl_cert_reqs:
        notes.append(
            "client certificates " + ("required" if settings.ssl_cert_reqs == 2 else "checked")
        )
    if settings.enable_ssl_refresh:
        notes.append("certificates reloaded on change")
    ca = self_signed_ca(settings)
    if ca is not None:
        notes.append(f"self-signed certificate, its CA: {ca}")
    return notes


def curl_example(settings: Settings, port: int) -> str:
    auth = '-H "Authorization: Bearer $LLMSIM_API_KEY" ' if settings.api_key is not None else ""
    body = (
        '{"model": "' + settings.served_names[0] + '", '
        '"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}'
    )
    ca = self_signed_ca(settings)
    cacert = f"--cacert {shlex.quote(str(ca))} " if ca is not None else ""
    if settings.uds is not None:
        cacert += f"--unix-socket {shlex.quote(str(settings.uds))} "
    return (
        f"curl {cacert}{base_url(settings, port)}/v1/chat/completions "
        f"-H 'Content-Type: application/json' {auth}-d {shlex.quote(body)}"
    )


def grpc_address(settings: Settings, port: int | None = None) -> str | None:
    """``host:port`` of the gRPC listener (what grpcurl takes), None without one."""
    if settings.grpc_only:
        return _address(settings, port if port is not None else settings.port)
    if settings.grpc_port is None:
        return None
    bound = port if port is not None else settings.grpc_port
    return _address(settings, bound) if bound else "<free port>"


def grpcurl_example(settings: Settings, address: str) -> str:
    """A first call to a gRPC-only server: its health check."""
    auth = '-H "authorization: Bearer $LLMSIM_API_KEY" ' if settings.api_key is not None else ""
    ca = self_signed_ca(settings)
    if not tls_enabled(settings):
        auth = "-plaintext " + auth
    elif ca is not None:
        auth = f"-cacert {shlex.quote(str(ca))} " + auth
    return f"grpcurl {auth}{address} grpc.health.v1.Health/Check"


def render_banner(
    console: Console, settings: Settings, port: int, loop_name: str, grpc_port: int | None = None
) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", justify="right")
    table.add_column()
    names = settings.served_names
    table.add_row("model", names[0] + (f"  (also: {', '.join(names[1:])})" if names[1:] else ""))
    adapters = [a.name for a in settings.adapters]
    table.add_row("adapters", ", ".join(adapters) if adapters else "-")
    table.add_row(
        "mode", settings.mode + (f"  (seed {settings.seed})" if settings.seed is not None else "")
    )
    if settings.profile:
        table.add_row("profile", settings.profile)
    if settings.tokenizer or settings.chat_template:
        template = "  (custom chat template)" if settings.chat_template else ""
        table.add_row("tokenizer", (settings.tokenizer or "built-in") + template)
    table.add_row("timing", _timing(settings))
    table.add_row(
        "limits",
        f"{settings.max_running_requests} running, {settings.max_waiting_queue_length} waiting, "
        f"{settings.max_loras} LoRA slot{'s' if settings.max_loras > 1 else ''} "
        f"({settings.cpu_lora_capacity} warm), "
        f"context {settings.max_model_len} tokens",
    )
    data_parallel = _data_parallel(settings)
    if data_parallel:
        table.add_row("data parallel", data_parallel)
    extras = []
    if settings.api_key is not None:
        extras.append(
            "API key required on gRPC"
            if settings.grpc_only
            else "API key required on /v1/* and /admin/*"
            + (" and gRPC" if settings.grpc_port is not None else "")
        )
    if settings.scheduling_policy == "priority":
        extras.append("priority scheduling")
    if settings.max_num_queued_reqs is not None:
        extras.append(f"503 beyond {settings.max_num_queued_reqs} requests in flight")
    if settings.max_num_queued_tokens is not None:
        extras.append(f"503 from {settings.max_num_queued_tokens} prompt tokens in prefill")
    if settings.failure_injection_rate:
        extras.append(f"{settings.failure_injection_rate:g}% injected failures")
    if settings.stream_cut_rate:
        extras.append(f"{settings.stream_cut_rate:g}% streams cut")
    if settings.startup_duration:
        extras.append(f"ready after {format_duration(settings.startup_duration)}")
    events = settings.kv_events_config
    if events is not None and events.publishes:
        extras.append(f"KV events on {events.endpoint}")
    transfer = settings.kv_transfer_config
    if transfer is not None and transfer.kv_connector is not None:
        extras.append(f"P/D {transfer.kv_role} ({transfer.kv_connector})")
    if settings.enable_sleep_mode:
        extras.append("sleep mode")
    extras += _tls_notes(settings)
    if extras:
        table.add_row("notes", ", ".join(extras))
    if settings.vllm_flags_without_effect:
        table.add_row(
            "vLLM flags",
            escape("accepted, no effect here: " + ", ".join(settings.vllm_flags_without_effect)),
        )
    url = base_url(settings, port)
    if settings.grpc_only:
        pass  # no HTTP: the gRPC row below is the address
    elif settings.uds is not None:
        table.add_row("url", escape(f"unix:{settings.uds}  (metrics: {url}/metrics over it)"))
    else:
        table.add_row("url", f"[link={url}]{url}[/link]  (metrics: {url}/metrics)")
    grpc = grpc_address(settings, grpc_port)
    if grpc is not None:
        only = ", no HTTP" if settings.grpc_only else ""
        table.add_row("grpc", f"{grpc}  (vllm.grpc.engine.VllmEngine, health, reflection{only})")
    title = f"[bold]llmsim {__version__}[/bold] · vLLM-compatible simulator · {loop_name}"
    console.print(Panel(table, title=title, title_align="left", border_style="green", expand=False))
    # Outside the panel and unwrapped, so it can be copied as one line.
    example = (
        grpcurl_example(settings, grpc)
        if settings.grpc_only and grpc is not None
        else curl_example(settings, port)
    )
    console.print(example, markup=False, highlight=False, soft_wrap=True)


def _data_parallel(settings: Settings) -> str | None:
    """Which ranks this server's engines are and who balances between them."""
    size = settings.data_parallel_size
    if size == 1:
        return None
    layout = data_parallel_layout(settings)
    first, last = layout.ranks[0], layout.ranks[-1]
    if layout.mode == "external":
        text = f'rank {first} of {size}, external load balancing (engine="{first}")'
    else:
        where = "this node's " if layout.mode == "hybrid" else ""
        text = (
            f"{where}{len(layout.ranks)} engines of {size} behind this port "
            f'(engine="{first}".."{last}"), balanced as vLLM\'s API server does'
        )
    count = settings.api_server_count
    if count is not None and count > 1:
        text += f"; {count} API servers in vLLM, one front end here"
    return text


def startup_fields(
    settings: Settings,
    port: int,
    loop_name: str,
    ranks: Sequence[int] | None = None,
    grpc_port: int | None = None,
) -> dict[str, Any]:
    """What the banner shows, as the fields of the JSON start-up record; ``ranks`` are
    the server's engines (all the layout's by default), ``grpc_port`` the bound gRPC port."""
    fields = _fields(settings, port, loop_name, ranks)
    grpc = grpc_address(settings, grpc_port)
    if grpc is not None:
        fields["grpc_address"] = grpc
    if settings.grpc_only:
        fields["url"] = None  # no HTTP
    return fields


def _fields(
    settings: Settings, port: int, loop_name: str, ranks: Sequence[int] | None
) -> dict[str, Any]:
    ca = self_signed_ca(settings)
    return {
        "version": __version__,
        "url": base_url(settings, port),
        "host": settings.host,
        "port": port,
        "uds": None if settings.uds is None else str(settings.uds),
        "model": settings.served_names[0],
        "served_model_names": settings.served_names,
        "adapters": [adapter.name for adapter in settings.adapters],
        "mode": settings.mode,
        "seed": settings.seed,
        "profile": settings.profile,
        "latency_model": settings.latency_model,
        "time_to_first_token_ms": settings.time_to_first_token * 1000.0,
        "frontend_latency_ms": settings.frontend_latency * 1000.0,
        "prefill_time_per_token_ms": settings.prefill_time_per_token * 1000.0,
        "inter_token_latency_ms": settings.inter_token_latency * 1000.0,
        "max_running_requests": settings.max_running_requests,
        "max_waiting_queue_length": settings.max_waiting_queue_length,
        "max_loras": settings.max_loras,
        "max_cpu_loras": settings.cpu_lora_capacity,
        "max_model_len": settings.max_model_len,
        "data_parallel_ranks": list(ranks or data_parallel_layout(settings).ranks),
        "tokenizer": settings.tokenizer or "builtin",
        "api_key_required": settings.api_key is not None,
        "vllm_flags_without_effect": settings.vllm_flags_without_effect,
        "event_loop": loop_name,
        "self_signed_ca": None if ca is None else str(ca),
    }


# -- several instances: data-parallel ranks and fleets ---------------------------------


def _limits(settings: Settings) -> str:
    return (
        f"{settings.max_running_requests} running, {settings.max_waiting_queue_length} waiting, "
        f"{settings.max_loras} LoRA slot{'s' if settings.max_loras > 1 else ''}"
    )


def _failures(settings: Settings) -> str:
    parts = []
    if settings.failure_injection_rate:
        parts.append(f"{settings.failure_injection_rate:g}% errors")
    if settings.stream_cut_rate:
        parts.append(f"{settings.stream_cut_rate:g}% streams cut")
    return ", ".join(parts) or "-"


def instance_url(settings: Settings, port: int) -> str:
    """The base URL, or a placeholder when the operating system will pick the port."""
    return base_url(settings, port) if port else base_url(settings, 0).replace(":0", ":<free>")


def instances_table(
    instances: Sequence[Instance], ports: Sequence[int], pids: Sequence[int] | None = None
) -> Table:
    """One row per instance: name, URL, (process,) model, adapters, latency, limits, failures."""
    table = Table(box=None, padding=(0, 1), header_style="bold cyan")
    table.add_column("instance", no_wrap=True)
    table.add_column("url", no_wrap=True)
    if pids is not None:
        table.add_column("pid", no_wrap=True, justify="right")
    for column in ("model", "adapters", "latency", "limits", "failures"):
        table.add_column(column)
    for index, (instance, port) in enumerate(zip(instances, ports, strict=True)):
        settings = instance.settings
        adapters = ", ".join(adapter.name for adapter in settings.adapters) or "-"
        url = instance_url(settings, port)
        grpc = grpc_address(settings)
        row = [instance.name, url if grpc is None else f"{url}  grpc {grpc}"]
        if pids is not None:
            row.append(str(pids[index]))
        engines = f"{len(instance.ranks)} engines × " if len(instance.ranks) > 1 else ""
        row += [
            settings.model_label,
            adapters,
            _short_timing(settings),
            engines + _limits(settings),
            _failures(settings),
        ]
        table.add_row(*row)
    return table


def render_instances_banner(
    console: Console,
    instances: Sequence[Instance],
    ports: Sequence[int],
    pids: Sequence[int],
    how: str,
) -> None:
    """One panel for every instance, then a curl command for the first."""
    title = f"[bold]llmsim {__version__}[/bold] · {len(instances)} simulated vLLM instances · {how}"
    console.print(
        Panel(
            instances_table(instances, ports, pids),
            title=title,
            title_align="left",
            subtitle="metrics: URL/metrics on each · Ctrl-C stops all",
            subtitle_align="left",
            border_style="green",
            expand=False,
        )
    )
    first = instances[0].settings
    console.print(curl_example(first, ports[0]), markup=False, highlight=False, soft_wrap=True)
