"""Faults and attacks through the real entry points (bots, web chat, CLI, llmconnect).

Attacks tried, what must happen, and the test that holds it (in this package unless a path is
named; ``*`` stands for the rest of a test's name):

=======================================================  ================================================  =========================================
attack tried                                             expected outcome                                  test
=======================================================  ================================================  =========================================
Model answers ``[hi](!channel)``, ``[u](@U1)``,          no text field Slack receives (text,               test_slack_attacks::test_no_answer_can
``[g](!subteam^S1)``, ``<!here|x>``, ``<@W1>``,          markdown_text, chunks, blocks) holds a            _ping_in_any_streaming_mode,
``<#C1|x>``, ``<!date^..>``, entities, reference         mention, in update and native mode, wherever      ::test_a_stream_cut_anywhere_still
links, bare ``@here``; a prompt's ``&lt;!channel&gt;``   the stream is cut                                 _pings_nobody
echoed back
Native stream expires mid-bait, goes on by edits         the edits ping nobody                             test_slack_attacks::test_a_native_stream*
Link label ``[<!channel> & <@U1>](https://x.test/a)``    label escaped (update) or broken (native)         test_slack_attacks::test_a_link_label*
Links to ``javascript:``, ``slack://``, ``tel:``,        shown as their label; only http(s) and mailto     test_slack_attacks::test_links_only_to
``data:``, relative paths                                are links                                         _the_web_and_mail
Signed Slack request with timestamp ``abc``, empty,      401, nothing runs                                 test_slack_attacks::test_a_signed_request
``12.5``, ``1e9``, ``-1``, 5,000 digits                                                                    _with_a_non_numeric_timestamp_gets_401
Signed Slack body: bad JSON, an array, invalid UTF-8,    4xx, no error logged, the bot answers on          test_slack_attacks::test_a_signed
deep nesting, ``event`` not an object, wrong types                                                         _malformed_body*
Slack body over 1 MiB; malformed with a bad signature    413; 401 (the signature is checked first)         test_slack_attacks::test_a_signed_body
                                                                                                           _over_1_mib*, ::test_a_malformed_body*
Page on another port of 127.0.0.1 sends no-cors POST     403; history and list intact (Chromium)           test_web_attacks::test_a_page_on_another
``/chat/{id}/reset`` and ``/api/conversations``                                                            _port_cannot_reset_a_chat
POST with a foreign or null Origin, cross-site           403                                               test_web_attacks::test_state_changes
Sec-Fetch-Site, a form or text body without Origin                                                         _from_another_origin_are_refused
``{"text": "\\ud800 x"}``; lone surrogates or bytes       repaired to U+FFFD; GET /chat/{id} and            test_web_attacks::test_a_lone_surrogate*,
that are not UTF-8 already in SQLite or Redis            /api/conversations 200; the history loads         ::test_stored_bad_text*,
                                                                                                           test_core_attacks::test_bad_text*
Emoji split across two provider chunks                   joined; anything unpaired becomes U+FFFD          test_llm_stream_limits::test_surrogates*
``: keep-alive`` comments, or one byte per write         timeout after LLM_IDLE_TIMEOUT without a          test_llm_stream_limits::test_keepalive*,
                                                         content event; the text so far kept               ::test_one_byte_at_a_time*
Endless steady stream past LLM_MAX_DURATION              cut with a note, text kept, never retried         test_llm_stream_limits::test_a_reply
                                                                                                           _longer*, ::test_time_limit_cut*
An event of LLM_MAX_EVENT_BYTES + 1; an endless line     EventTooLargeError; the limit itself accepted     test_llm_stream_limits::test_event_size*,
                                                                                                           ::test_an_endless_line_fails_cleanly
Provider error echoing the key at offsets 0..400         no 4-character piece of the key in logs, str,     test_llm_stream_limits::test_a_key_echoed*
                                                         repr or the user's message
``/model gemini/../../admin/delete?x=`` (``?#%``,        refused with the available models, no request     test_core_attacks::test_hostile_model*,
whitespace, ``..``, non-ASCII)                           sent, the model unchanged                         test_llm_stream_limits::test_unsafe_model*
Proxy answers a streaming request with one JSON body     read as the whole reply, one request              test_llm_stream_limits::test_a_json*,
                                                                                                           ::test_a_gemini_json_array*
A 200 body read to its end without a finish              StreamInterruptedError, never retried             test_llm_stream_limits::test_a_200*
``llmconnect chat PROMPT`` whose reply fails             exit status 1                                     test_llm_stream_limits::test_cli_one*
Rotating X-Forwarded-For against the sign-in throttle    the 6th wrong token is 429 (forwarded addresses   test_web_attacks::test_rotating*,
                                                         only from WEB_TRUSTED_PROXIES)                    ::test_a_trusted_proxys*
A body of WEB_MAX_BODY_BYTES + 1, sized or chunked       413, the route not run; the limit accepted        test_web_attacks::test_a_body_at_the_limit*
An invalid body carrying a secret                        422 with locations and messages, never the input  test_web_attacks::test_a_validation_error*
Restart on SQLite or Redis                               /api/conversations lists the web conversations    test_web_attacks::test_the_conversation
                                                                                                           _list_survives_a_restart
redis-server stopped mid-session or mid-reply            503 with the store's message on every web route;  test_web_attacks::test_redis_stopping*,
                                                         the reply ends ``error``, "not saved", logged     test_core_attacks::test_redis_stopped*
                                                         once
WEB_MAX_STREAMS + 1 open streams from one address        429 naming WEB_MAX_STREAMS                        test_web_attacks::test_open_streams*
``*``, ``_``, ``~~`` inside a link's URL                 the rendered href unchanged (Chromium)            test_web_attacks::test_emphasis_never*
Forged session cookie, empty bearer, a prefix of the     401                                               test_web_attacks::test_forged_cookies*
token, the token minus its last character
MAX_QUEUED_PROMPTS + 1 prompts in one conversation       the limit waits; the next is refused, saying so   test_core_attacks::test_queued_prompts*
STORE_URL at a file that is no database, or corrupt      exit 2, one line naming STORE_URL, no traceback,  test_core_attacks::test_a_sqlite_file*
                                                         the file untouched
Other local users reading the SQLite store               the database, -wal and -shm are 0600              test_core_attacks::test_the_sqlite_store*
Mentions in later messages of a long Discord reply       allowed_mentions pings nobody on every create     tests/bots/discord/test_safety.py
and in ``/ask`` follow-ups                               and edit
Another process sets the model or system prompt          both survive the reply's save; /stop still        tests/core/stores/test_redis_cluster.py
mid-reply; its pub/sub connection is killed              reaches it
Platform answers 500 twice / four times                  retried (1 s, 2 s), not counted as rate limits;   test_platform_faults::test_a_500*,
                                                         then the platform's error, the text kept          ::test_a_lasting_500*
A shutdown while a stopped reply's save is slow          shutdown waits for the save                       tests/core/stores/test_engine_stores.py
Provider 401 echoing the key, JSON logs at DEBUG;         no key, prompt, answer or channel id in any       test_secrets::test_json_logs_of_a_slack
library debug logs of request bodies                     log line (library loggers held at INFO unless     _reply_hold_no_secret_and_no_message_text
                                                         LOG_CONTENT=true)
A user id, channel id or prompt in a metric label        labels are front end, provider, status,           tests/bots/test_metrics.py::test_replies
                                                         outcome, direction, error class only              _through_each_front_end_are_counted*
/metrics or /readyz without WEB_AUTH_TOKEN; Redis        401; 503 with fixed phrases, no store URL or      tests/bots/test_metrics.py::test_metrics
stopped behind /readyz                                   exception text                                    _and_health_need_the_token*, ::test_readyz*
A secret (a token, a provider key, the log salt) in      refused, its value never shown: exit 2 at         tests/bots/test_config_file.py::test_a
llmconnect.toml; a broken file written while running     start-up, the old settings kept on reload         _secret_in_the_file*, ::test_a_wrong_file*
=======================================================  ================================================  =========================================
"""
