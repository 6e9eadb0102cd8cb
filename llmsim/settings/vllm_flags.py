"""Every flag of ``vllm serve`` (vLLM 0.34.0), as its parser declares it, and what it maps to.

One line per flag, columns separated by two or more spaces:

* the option strings: the primary one first, then aliases and short forms; a ``!`` marks
  the strings that turn an on/off flag off (``--disable-x``, ``--no-enable-x``);
* the value kind as vLLM checks it: ``str``, ``int``, ``float``, ``hint`` (``4k``, ``1M``),
  ``hint_auto`` (also ``auto``/``-1``), ``loads`` and ``json`` (JSON), ``config`` (a JSON
  object of a config dataclass; ``config_or_level`` also takes older vLLM's bare
  optimisation level, ``-cc 3``), ``dict_or_str``, ``lower`` (lower-cased choice), ``ids``
  (comma-separated integers), ``flag`` (no value), ``bool`` (on/off pair), ``append``
  (repeatable); a leading ``?`` means ``""`` and ``None`` also read as unset;
  ``{a|b}`` lists the choices; a trailing ``+`` or ``?`` is argparse's ``nargs``;
* what it maps to: a settings field (the value converted by the settings model), ``=name``
  for a conversion in :mod:`llmsim.settings.vllm_args`, or ``-``: accepted, no effect.

``## title`` lines are vLLM's argument groups. The last group holds flags that vLLM's
current release removed but that deployment manifests still pass.
"""

from __future__ import annotations

VLLM_VERSION = "0.34.0"

VLLM_FLAGS = """
## Serve
--headless                                                              flag          -
--headless-client-handshake-address                                     str           -
--api-server-count -asc                                                 int           api_server_count
--config                                                                str           =config
--grpc                                                                  flag          grpc_only
--disable-log-stats                                                     flag          =log_stats
--aggregate-engine-logging                                              flag          -
--fail-on-environ-validation !--no-fail-on-environ-validation           bool          -
--shutdown-timeout                                                      int           =shutdown_timeout
--gdn-prefill-backend                                                   str{flashinfer|triton|cutedsl|aiter_flydsl|sycl|hip}  -
--kda-prefill-backend                                                   str{auto|triton|flashkda|flashinfer|fused}  -
--kda-decode-backend                                                    str{auto|native|flashinfer|triton}  -
--enable-log-requests !--disable-log-requests !--no-enable-log-requests  bool  log_requests
## Frontend
--lora-modules                                                          ?str+         lora_modules
--chat-template                                                         ?str          chat_template
--chat-template-content-format                                          str{auto|openai|string}  -
--trust-request-chat-template !--no-trust-request-chat-template         bool          trust_request_chat_template
--trust-request-mm-kwargs !--no-trust-request-mm-kwargs                 bool          -
--default-chat-template-kwargs                                          loads         default_chat_template_kwargs
--reasoning-effort-map                                                  loads         reasoning_effort_map
--response-role                                                         str           response_role
--return-tokens-as-token-ids !--no-return-tokens-as-token-ids           bool          return_tokens_as_token_ids
--enable-auto-tool-choice !--disable-auto-tool-choice !--no-enable-auto-tool-choice  bool  enable_auto_tool_choice
--exclude-tools-when-tool-choice-none !--no-exclude-tools-when-tool-choice-none  bool  exclude_tools_when_tool_choice_none
--tool-call-parser                                                      ?str          tool_call_parser
--tool-parser-plugin                                                    str           -
--tool-strict-level                                                     ?str{auto|function|parameter}  -
--tool-server                                                           ?str          -
--max-log-len                                                           ?int          max_log_len
--enable-prompt-tokens-details !--disable-prompt-tokens-details !--no-enable-prompt-tokens-details  bool  enable_prompt_tokens_details
--enable-per-request-metrics !--disable-per-request-metrics !--no-enable-per-request-metrics  bool  enable_per_request_metrics
--enable-server-load-tracking !--disable-server-load-tracking !--no-enable-server-load-tracking  bool  enable_server_load_tracking
--enable-force-include-usage !--disable-force-include-usage !--no-enable-force-include-usage  bool  enable_force_include_usage
--sse-keep-alive-interval                                               int           =sse_keep_alive_interval
--enable-tokenizer-info-endpoint !--disable-tokenizer-info-endpoint !--no-enable-tokenizer-info-endpoint  bool  enable_tokenizer_info_endpoint
--enable-log-outputs !--disable-log-outputs !--no-enable-log-outputs    bool          log_outputs
--enable-log-deltas !--disable-log-deltas !--no-enable-log-deltas       bool          log_deltas
--cohere-is-reasoning-model !--no-cohere-is-reasoning-model             bool          -
--cohere-format                                                         str           -
--anthropic-disabled-thinking-effort                                    str{auto|high|low|max|medium|none|xhigh}  -
--log-error-stack !--no-log-error-stack                                 bool          log_error_stack
--tokens-only !--no-tokens-only                                         bool          =tokens_only
--enable-scale-out !--disable-scale-out !--no-enable-scale-out          bool          enable_scale_out
--fingerprint-mode                                                      str{custom|full|hash|none}  fingerprint_mode
--fingerprint-value                                                     ?str          fingerprint_value
--host                                                                  ?str          host
--port                                                                  int           port
--grpc-port                                                             ?int          grpc_port
--data-parallel-supervisor-port                                         int           -
--dp-supervisor-probe-interval-s                                        float         -
--dp-supervisor-probe-timeout-s                                         float         -
--dp-supervisor-probe-failure-threshold                                 int           -
--uds                                                                   ?str          uds
--uvicorn-log-level                                                     str{critical|debug|error|info|trace|warning}  =log_level
--disable-uvicorn-access-log !--enable-uvicorn-access-log !--no-disable-uvicorn-access-log  bool  =access_log
--disable-access-log-for-endpoints                                      ?str          disable_access_log_for_endpoints
--allow-credentials !--no-allow-credentials                             bool          allow_credentials
--allowed-origins                                                       loads         allowed_origins
--allowed-methods                                                       loads         allowed_methods
--allowed-headers                                                       loads         allowed_headers
--api-key                                                               ?str+         =api_key
--ssl-keyfile                                                           ?str          ssl_keyfile
--ssl-certfile                                                          ?str          ssl_certfile
--ssl-ca-certs                                                          ?str          ssl_ca_certs
--enable-ssl-refresh !--disable-ssl-refresh !--no-enable-ssl-refresh    bool          enable_ssl_refresh
--ssl-cert-reqs                                                         int           ssl_cert_reqs
--ssl-ciphers                                                           ?str          ssl_ciphers
--root-path                                                             ?str          root_path
--middleware                                                            append        -
--enable-request-id-headers !--disable-request-id-headers !--no-enable-request-id-headers  bool  enable_request_id_headers
--disable-fastapi-docs !--enable-fastapi-docs !--no-disable-fastapi-docs  bool  disable_fastapi_docs
--h11-max-incomplete-event-size                                         int           max_header_size
--h11-max-header-count                                                  int           max_header_count
--enable-offline-docs !--disable-offline-docs !--no-enable-offline-docs  bool  -
--enable-flash-late-interaction !--disable-flash-late-interaction !--no-enable-flash-late-interaction  bool  -
## ModelConfig
--model                                                                 str           model
--runner                                                                str{auto|draft|generate|pooling}  runner
--convert                                                               str{auto|classify|embed|none}  =runner
--tokenizer                                                             str           tokenizer
--tokenizer-mode                                                        str           -
--trust-remote-code !--no-trust-remote-code                             bool          -
--dtype                                                                 str{auto|bfloat16|float|float16|float32|half}  -
--seed                                                                  int           seed
--hf-config-path                                                        ?str          -
--allowed-local-media-path                                              str           -
--allowed-media-domains                                                 ?str+         -
--revision                                                              ?str          -
--code-revision                                                         ?str          -
--tokenizer-revision                                                    ?str          -
--max-model-len                                                         hint_auto     max_model_len
--quantization -q                                                       ?str          -
--quantization-config                                                   ?config       -
--allow-deprecated-quantization !--no-allow-deprecated-quantization     bool          -
--enforce-eager !--no-enforce-eager                                     bool          -
--enable-return-routed-experts !--disable-return-routed-experts !--no-enable-return-routed-experts  bool  -
--return-sampling-mask !--no-return-sampling-mask                       bool          -
--max-logprobs                                                          int           max_logprobs
--logprobs-mode                                                         str{processed_logits|processed_logprobs|raw_logits|raw_logprobs}  -
--use-fp64-gumbel !--no-use-fp64-gumbel                                 bool          -
--enable-trace-replay !--disable-trace-replay !--no-enable-trace-replay  bool  -
--disable-sliding-window !--enable-sliding-window !--no-disable-sliding-window  bool  -
--disable-cascade-attn !--enable-cascade-attn !--no-disable-cascade-attn  bool  -
--skip-tokenizer-init !--no-skip-tokenizer-init                         bool          -
--enable-prompt-embeds !--disable-prompt-embeds !--no-enable-prompt-embeds  bool  -
--served-model-name                                                     ?str+         served_model_name
--config-format                                                         str           -
--hf-token                                                              str?          -
--hf-overrides                                                          dict_or_str   -
--model-class-overrides                                                 json          -
--pooler-config                                                         ?config       -
--generation-config                                                     str           generation_config
--override-generation-config                                            json          override_generation_config
--enable-sleep-mode !--disable-sleep-mode !--no-enable-sleep-mode       bool          enable_sleep_mode
--sleep-mode-backend                                                    str           -
--sleep-mode-offload-cudagraph !--no-sleep-mode-offload-cudagraph       bool          -
--sleep-preserve-parameter-names                                        str+          -
--enable-cumem-allocator !--disable-cumem-allocator !--no-enable-cumem-allocator  bool  -
--enable-nccl-comm-suspend !--disable-nccl-comm-suspend !--no-enable-nccl-comm-suspend  bool  -
--checkpoint-prepare-on-startup !--no-checkpoint-prepare-on-startup     bool          -
--model-impl                                                            str           -
--logits-processors                                                     ?str+         -
--io-processor-plugin                                                   ?str          -
--renderer-num-workers                                                  int           -
## LoadConfig
--load-format                                                           str           -
--download-dir                                                          ?str          -
--safetensors-load-strategy                                             ?str{eager|lazy|prefetch|torchao}  -
--safetensors-prefetch-num-threads                                      int           -
--safetensors-prefetch-block-size                                       hint          -
--model-loader-extra-config                                             dict_or_str   -
--ignore-patterns                                                       str+          -
--use-tqdm-on-load !--no-use-tqdm-on-load                               bool          -
--pt-load-map-location                                                  dict_or_str   -
--shuffle-safetensors-files !--no-shuffle-safetensors-files             bool          -
## AttentionConfig
--attention-backend                                                     ?str          -
## MambaConfig
--mamba-backend                                                         str           -
--mamba-ssu-algorithm                                                   ?str{auto|horizontal|simple|vertical}  -
--enable-mamba-cache-stochastic-rounding !--disable-mamba-cache-stochastic-rounding !--no-enable-mamba-cache-stochastic-rounding  bool  -
--mamba-cache-philox-rounds                                             int           -
## StructuredOutputsConfig
--reasoning-parser                                                      str           reasoning_parser
--reasoning-parser-plugin                                               str           -
## ParallelConfig
--distributed-executor-backend                                          ?str          -
--pipeline-parallel-size -pp                                            int           -
--master-addr                                                           str           -
--master-port                                                           int           -
--nnodes -n                                                             int           -
--node-rank -r                                                          int           -
--distributed-timeout-seconds                                           ?int          -
--cpu-distributed-timeout-seconds                                       ?int          -
--numa-bind !--no-numa-bind                                             bool          -
--numa-bind-nodes                                                       ?int+         -
--numa-bind-cpus                                                        ?str+         -
--device-ids                                                            ids           -
--tensor-parallel-size -tp                                              int           -
--decode-context-parallel-size -dcp                                     int           -
--dcp-comm-backend                                                      ?str{a2a|ag_rs}  -
--dcp-q-replicate !--no-dcp-q-replicate                                 bool          -
--dcp-kv-cache-interleave-size                                          int           -
--cp-kv-cache-interleave-size                                           int           -
--prefill-context-parallel-size -pcp                                    int           -
--data-parallel-size -dp                                                int           data_parallel_size
--data-parallel-rank -dpn                                               int           data_parallel_rank
--data-parallel-start-rank -dpr                                         int           data_parallel_start_rank
--data-parallel-size-local -dpl                                         int           data_parallel_size_local
--data-parallel-address -dpa                                            str           data_parallel_address
--data-parallel-rpc-port -dpp                                           int           data_parallel_rpc_port
--data-parallel-backend -dpb                                            str           -
--data-parallel-hybrid-lb -dph !--no-data-parallel-hybrid-lb            bool          data_parallel_hybrid_lb
--data-parallel-external-lb -dpe !--no-data-parallel-external-lb        bool          data_parallel_external_lb
--data-parallel-multi-port-external-lb -dpm                             flag          -
--enable-hc-sp !--disable-hc-sp !--no-enable-hc-sp                      bool          -
--enable-expert-parallel -ep !--disable-expert-parallel !--no-enable-expert-parallel  bool  -
--enable-batch-sharded-sampling !--disable-batch-sharded-sampling !--no-enable-batch-sharded-sampling  bool  -
--enable-ep-weight-filter !--disable-ep-weight-filter !--no-enable-ep-weight-filter  bool  -
--all2all-backend                                                       str{allgather_reducescatter|deepep_high_throughput|deepep_low_latency|deepep_v2|flashinfer_all2allv|flashinfer_nvlink_one_sided|flashinfer_nvlink_two_sided|moonep|mori|mori_high_throughput|mori_low_latency|naive|nixl_ep|pplx}  -
--enable-dbo !--disable-dbo !--no-enable-dbo                            bool          -
--enable-shm-tensor-arena !--disable-shm-tensor-arena !--no-enable-shm-tensor-arena  bool  -
--ubatch-size                                                           int           -
--enable-elastic-ep !--disable-elastic-ep !--no-enable-elastic-ep       bool          -
--elastic-ep-max-dp-size                                                int           -
--dbo-decode-token-threshold                                            int           -
--dp-sync-interval                                                      int           -
--dbo-prefill-token-threshold                                           int           -
--disable-nccl-for-dp-synchronization !--enable-nccl-for-dp-synchronization !--no-disable-nccl-for-dp-synchronization  bool  -
--enable-eplb !--disable-eplb !--no-enable-eplb                         bool          -
--eplb-config                                                           config        -
--expert-placement-strategy                                             str{linear|round_robin}  -
--max-parallel-loading-workers                                          ?int          -
--ray-workers-use-nsight !--no-ray-workers-use-nsight                   bool          -
--disable-custom-all-reduce !--enable-custom-all-reduce !--no-disable-custom-all-reduce  bool  -
--worker-cls                                                            str           -
--worker-extension-cls                                                  str           -
--enable-fault-tolerance !--disable-fault-tolerance !--no-enable-fault-tolerance  bool  -
--fault-tolerance-config                                                config        -
## CacheConfig
--block-size                                                            int           block_size
--gpu-memory-utilization --device-memory-utilization                    ?float        =kv_cache_size
--kv-cache-memory-bytes                                                 ?hint         =kv_cache_size
--enable-extensible-kv-cache !--disable-extensible-kv-cache !--no-enable-extensible-kv-cache  bool  -
--kv-cache-dtype                                                        str           -
--num-gpu-blocks-override                                               ?int          =kv_cache_size
--enable-prefix-caching !--disable-prefix-caching !--no-enable-prefix-caching  bool  enable_prefix_caching
--prefix-caching-hash-algo                                              str{sha256|sha256_cbor|xxhash|xxhash_cbor}  prefix_caching_hash_algo
--prefix-cache-retention-interval                                       ?int          -
--kv-cache-dtype-skip-layers                                            str+          -
--kv-sharing-fast-prefill !--no-kv-sharing-fast-prefill                 bool          -
--swa-bounded-replay !--no-swa-bounded-replay                           bool          -
--mamba-cache-dtype                                                     str{auto|bfloat16|float16|float32}  -
--mamba-ssm-cache-dtype                                                 str{auto|bfloat16|float16|float32}  -
--mamba-block-size                                                      ?int          -
--prefix-match-unit                                                     ?int          -
--mamba-cache-mode                                                      str{align|none}  -
--enable-mamba-shared-prefix-checkpoint !--disable-mamba-shared-prefix-checkpoint !--no-enable-mamba-shared-prefix-checkpoint  bool  -
--replayssm-buffer-len                                                  int           -
--use-replayssm !--no-use-replayssm                                     bool          -
--kv-offloading-size                                                    ?float        -
--kv-offloading-backend                                                 str{lmcache|native}  -
## OffloadConfig
--offload-backend                                                       str{auto|prefetch|uva}  -
--cpu-offload-gb                                                        float         -
--cpu-offload-params                                                    str+          -
--offload-group-size                                                    int           -
--offload-num-in-group                                                  int           -
--offload-prefetch-step                                                 int           -
--offload-params                                                        str+          -
## MultiModalConfig
--language-model-only !--no-language-model-only                         bool          -
--limit-mm-per-prompt                                                   json          -
--enable-mm-embeds !--disable-mm-embeds !--no-enable-mm-embeds          bool          -
--media-io-kwargs                                                       json          -
--mm-processor-kwargs                                                   ?json         -
--mm-processor-cache-gb                                                 float         -
--mm-processor-cache-type                                               str{lru|shm}  -
--mm-hasher-algorithm                                                   str{blake3|sha256|sha512}  -
--mm-shm-cache-max-object-size-mb                                       int           -
--mm-encoder-only !--no-mm-encoder-only                                 bool          -
--mm-encoder-tp-mode                                                    str{data|weights}  -
--mm-encoder-attn-backend                                               ?str          -
--mm-encoder-attn-dtype                                                 ?str{fp8}     -
--mm-encoder-fp8-scale-path                                             ?str          -
--mm-encoder-fp8-scale-save-path                                        ?str          -
--mm-encoder-fp8-scale-save-margin                                      float         -
--interleave-mm-strings !--no-interleave-mm-strings                     bool          -
--skip-mm-profiling !--no-skip-mm-profiling                             bool          -
--video-pruning-rate                                                    ?float        -
--video-pruning-method                                                  str{evs|vidcom2}  -
--mm-tensor-ipc                                                         str{direct_rpc|torch_shm}  -
--mm-processor-device                                                   str{auto|cpu}  -
--mm-ipc-gpu-memory-gb                                                  float         -
--mm-device-do-normalize !--no-mm-device-do-normalize                   bool          -
## LoRAConfig
--enable-lora !--disable-lora !--no-enable-lora                         bool          -
--max-loras                                                             int           max_loras
--max-lora-rank                                                         int{1|8|16|32|64|128|256|320|512}  -
--lora-dtype                                                            str{auto|bfloat16|float16}  -
--enable-tower-connector-lora !--disable-tower-connector-lora !--no-enable-tower-connector-lora  bool  -
--max-cpu-loras                                                         ?int          max_cpu_loras
--fully-sharded-loras !--no-fully-sharded-loras                         bool          -
--lora-target-modules                                                   ?str+         -
--default-mm-loras                                                      ?json         -
--specialize-active-lora !--no-specialize-active-lora                   bool          -
--enable-mixed-moe-lora-format !--disable-mixed-moe-lora-format !--no-enable-mixed-moe-lora-format  bool  -
--enable-moe-shared-loras !--disable-moe-shared-loras !--no-enable-moe-shared-loras  bool  -
--max-lora-cls-labels                                                   ?int          -
## LoggingConfig
--logging-config                                                        config        -
--log-level                                                             str{CRITICAL|ERROR|WARNING|INFO|DEBUG|NOTSET}  log_level
--log-config-file                                                       str           -
## ObservabilityConfig
--show-hidden-metrics-for-version                                       ?str          -
--otlp-traces-endpoint                                                  ?str          -
--collect-detailed-traces                                               ?str{all|model|worker}+  -
--per-request-spec-decode-metrics                                       str{detailed|none|summary}  -
--kv-cache-metrics !--no-kv-cache-metrics                               bool          kv_cache_metrics
--kv-cache-metrics-sample                                               float         kv_cache_metrics_sample
--custom-histogram-buckets                                              ?json         custom_histogram_buckets
--cudagraph-metrics !--no-cudagraph-metrics                             bool          -
--enable-layerwise-nvtx-tracing !--disable-layerwise-nvtx-tracing !--no-enable-layerwise-nvtx-tracing  bool  -
--enable-mfu-metrics !--disable-mfu-metrics !--no-enable-mfu-metrics    bool          -
--enable-logging-iteration-details !--disable-logging-iteration-details !--no-enable-logging-iteration-details  bool  -
--jit-monitor-mode                                                      str{error|warn}  -
--jit-monitor-verbose !--no-jit-monitor-verbose                         bool          -
## SchedulerConfig
--max-num-batched-tokens                                                hint          max_num_batched_tokens
--max-num-scheduled-tokens                                              ?hint         max_num_scheduled_tokens
--max-num-seqs                                                          int           max_running_requests
--max-num-active-seqs                                                   ?int          max_num_active_seqs
--max-num-inflight-kv-loads                                             ?int          -
--max-num-queued-reqs                                                   ?int          max_num_queued_reqs
--max-num-queued-tokens                                                 ?hint         max_num_queued_tokens
--long-prefill-token-threshold                                          int           long_prefill_token_threshold
--long-prefill-token-threshold-adaptive !--no-long-prefill-token-threshold-adaptive  bool  long_prefill_token_threshold_adaptive
--scheduling-policy                                                     str{fcfs|priority}  scheduling_policy
--enable-chunked-prefill !--disable-chunked-prefill !--no-enable-chunked-prefill  bool  enable_chunked_prefill
--disable-chunked-mm-input !--enable-chunked-mm-input !--no-disable-chunked-mm-input  bool  -
--scheduler-cls                                                         ?str          -
--scheduler-reserve-full-isl !--no-scheduler-reserve-full-isl           bool          scheduler_reserve_full_isl
--watermark                                                             float         watermark
--prefill-schedule-interval                                             int           prefill_schedule_interval
--cache-aware-admission-window                                          int           cache_aware_admission_window
--cache-aware-admission-threshold                                       float         cache_aware_admission_threshold
--disable-hybrid-kv-cache-manager !--enable-hybrid-kv-cache-manager !--no-disable-hybrid-kv-cache-manager  bool  -
--async-scheduling !--no-async-scheduling                               bool          -
--stream-interval                                                       int           stream_interval
## CompilationConfig
--cudagraph-capture-sizes                                               int+          -
--max-cudagraph-capture-size                                            int           -
## KernelConfig
--ir-op-priority                                                        config        -
--enable-flashinfer-autotune !--disable-flashinfer-autotune !--no-enable-flashinfer-autotune  bool  -
--monokernel !--no-monokernel                                           bool          -
--moe-backend                                                           lower{aiter|aiter_mega_moe|aiter_triton_mxfp4_bf16|aiter_triton_mxfp4_mxfp4|auto|b12x|batched_triton|cutlass|deep_gemm|deep_gemm_mega_moe|emulation|flashinfer_b12x|flashinfer_cutedsl|flashinfer_cutlass|flashinfer_moe_ep_cutedsl|flashinfer_moe_ep_mega_deep_gemm|flashinfer_trtllm|flydsl|hpc|humming|marlin|rdna3|triton|triton_unfused}  -
--linear-backend                                                        lower{aiter|auto|b12x|conch|cutlass|deep_gemm|emulation|exllama|fbgemm|flashinfer_b12x|flashinfer_cudnn|flashinfer_cutedsl|flashinfer_cutlass|flashinfer_trtllm|humming|machete|marlin|torch|triton|xpu|xpu_woq}  -
--sparse-indexer-topk-backend                                           lower{aiter|auto|cooperative|deep_select|flashinfer|per_row|persistent|torch}  -
## VllmConfig
--speculative-config -sc                                                ?loads        -
--spec-method                                                           ?str          -
--spec-model                                                            ?str          -
--spec-tokens                                                           int           -
--watermark-config                                                      ?loads        -
--diffusion-config -dc                                                  ?loads        -
--kv-transfer-config                                                    ?config       kv_transfer_config
--kv-events-config                                                      ?config       kv_events_config
--ec-transfer-config                                                    ?config       -
--ec-manager-config                                                     config        -
--compilation-config -cc                                                config_or_level  -
--attention-config -ac                                                  config        -
--engram-config                                                         ?config       -
--reasoning-config                                                      ?config       -
--kernel-config                                                         config        -
--additional-config                                                     dict_or_str   -
--structured-outputs-config                                             config        -
--aux-output-config                                                     config        -
--profiler-config                                                       config        -
--watchdog-config                                                       config        -
--optimization-level                                                    str           -
--performance-mode                                                      str{balanced|interactivity|throughput}  -
--weight-transfer-config                                                ?config       -
## Removed in vLLM, still in manifests
--task  str{auto|generate|embedding|embed|classify|score|reward|transcription|draft}  =task
--swap-space  float  -
"""
