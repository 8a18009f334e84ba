// LLMConnect web chat: one page, no framework, no third-party code.
//
// Safety rule: text from the model (and from users) is escaped first; only the small Markdown
// subset below turns it into tags, and the only attributes it ever writes are a link's href, checked
// to be http(s) or mailto, and fixed class names (a code block's language, checked to be a word; a
// table column's alignment). The server's Content-Security-Policy blocks inline scripts besides.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LABELS = {
    idle: "idle",
    pending: "waiting",
    streaming: "streaming",
    complete: "complete",
    error: "error",
    cancelled: "stopped",
  };

  const state = {
    id: null, // conversation id (the URL fragment)
    view: 0, // bumped on every conversation switch; stale async results are dropped
    models: [],
    stream: null, // the open EventSource
    streamEl: null, // the assistant message being streamed into
    streamText: "",
    streamThought: "", // SHOW_REASONING=full: the reasoning streamed so far
    thoughts: {}, // created_at of an assistant message -> its reasoning (full; never stored)
    busy: false,
    modelChanges: 0, // bumped on every model pick; an older server answer must not undo it
    files: [], // files to send with the next message: { file, name, kind, url (an image's data URL) }
    buttons: true, // REPLY_BUTTONS: Stop on the reply being written, Regenerate/👍/👎 on the latest
  };

  // ------------------------------------------------------------------ Markdown, safely

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const safeUrl = (u) => /^(https?:\/\/|mailto:)/i.test(u);

  // Emphasis on already-escaped text: the replacements add fixed tags only.
  function emphasis(s) {
    s = s.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
    s = s.replace(/__([^_\n]+)__/g, "<strong>$1</strong>");
    s = s.replace(/(^|[^*\w])\*([^*\s][^*\n]*?)\*(?![*\w])/g, "$1<em>$2</em>");
    s = s.replace(/(^|[^_\w])_([^_\s][^_\n]*?)_(?![_\w])/g, "$1<em>$2</em>");
    s = s.replace(/~~([^~\n]+)~~/g, "<del>$1</del>");
    return s;
  }

  // Links, then emphasis. A finished link is set aside as a placeholder (\u0000n\u0000) while
  // emphasis runs, so `_`, `*` or `~~` inside a URL never turn into tags inside its href; the
  // label gets its emphasis on its own. NUL never survives from the input (it is replaced first).
  function spans(raw) {
    const links = [];
    let s = esc(raw.replace(/\u0000/g, "\uFFFD"));
    s = s.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (all, label, url) => {
      if (!safeUrl(url)) return all;
      links.push(`<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${emphasis(label)}</a>`);
      return `\u0000${links.length - 1}\u0000`;
    });
    return emphasis(s).replace(/\u0000(\d+)\u0000/g, (_, n) => links[Number(n)]);
  }

  // Code spans first, so nothing inside them is formatted.
  function inline(raw) {
    let out = "";
    let last = 0;
    for (const m of raw.matchAll(/`([^`\n]+)`/g)) {
      out += spans(raw.slice(last, m.index)) + "<code>" + esc(m[1]) + "</code>";
      last = m.index + m[0].length;
    }
    return out + spans(raw.slice(last));
  }

  // Code fences as CommonMark reads them, the rules of core/fences.py (which the server splits
  // and converts by; this page cannot import it): up to 3 spaces, then 3+ backticks or 3+ tildes,
  // then an info string (none with a backtick after backticks). A closing fence is the same
  // character, at least as long, followed by nothing but spaces or tabs.
  const FENCE = /^( {0,3})(`{3,}|~{3,})([^\n]*)$/;
  const trimInfo = (s) => s.replace(/^[ \t\r]+|[ \t\r]+$/g, "");

  function fenceOpen(line) {
    const m = FENCE.exec(line);
    if (!m || (m[2][0] === "`" && m[3].includes("`"))) return null;
    return { indent: m[1].length, marker: m[2], info: trimInfo(m[3]) };
  }

  function fenceCloses(line, fence) {
    const m = FENCE.exec(line);
    return !!m && m[2][0] === fence.marker[0] && m[2].length >= fence.marker.length && !trimInfo(m[3]);
  }

  // Tables as GitHub reads them: a header row, a delimiter row (`---`, `:--`, `:-:`, `--:` per
  // column, as many as the header has), then rows until a blank line. Cells are split on `|`
  // (`\|` is a literal bar), each rendered by inline(); alignment is one of three fixed class
  // names, so no attribute ever carries the model's text.
  function tableCells(line) {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  function tableStart(lines, i) {
    if (!lines[i].includes("|") || i + 1 >= lines.length) return null;
    const delim = lines[i + 1];
    if (!/^ {0,3}\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/.test(delim) || !delim.includes("-")) return null;
    if (!delim.includes("|") && !lines[i].trim().startsWith("|")) return null;
    const head = tableCells(lines[i]);
    const aligns = tableCells(delim).map((c) =>
      c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
    );
    return head.length === aligns.length ? { head, aligns } : null;
  }

  function tableHtml(head, aligns, rows) {
    const cell = (tag, text, n) => {
      const cls = aligns[n] ? ` class="al-${aligns[n]}"` : "";
      return `<${tag}${cls}>${inline(text)}</${tag}>`;
    };
    const tr = (tag, cells) => "<tr>" + aligns.map((_, n) => cell(tag, cells[n] || "", n)).join("") + "</tr>";
    const body = rows.length ? "<tbody>" + rows.map((r) => tr("td", r)).join("") + "</tbody>" : "";
    return `<div class="table"><table><thead>${tr("th", head)}</thead>${body}</table></div>`;
  }

  // Paragraphs, headings, lists, quotes, rules, tables and fenced code (an unclosed fence, as
  // while streaming, runs to the end).
  function renderMarkdown(src) {
    const lines = src.replace(/\r\n?/g, "\n").split("\n");
    const html = [];
    let para = [];
    let list = null;
    const flushPara = () => {
      if (para.length) html.push("<p>" + para.map(inline).join("<br>") + "</p>");
      para = [];
    };
    const flushList = () => {
      if (list) {
        const items = list.items.map((item) => `<li>${inline(item)}</li>`).join("");
        html.push(`<${list.type}>${items}</${list.type}>`);
      }
      list = null;
    };
    const flush = () => {
      flushPara();
      flushList();
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = fenceOpen(line);
      if (fence) {
        flush();
        const code = [];
        // A code line loses as many leading spaces (up to) as the opening fence had.
        const dedent = new RegExp(`^ {0,${fence.indent}}`);
        for (i++; i < lines.length && !fenceCloses(lines[i], fence); i++) code.push(lines[i].replace(dedent, ""));
        const lang = /^[\w+#.-]+/.exec(fence.info);
        const cls = lang ? ` class="language-${esc(lang[0])}"` : "";
        html.push(`<pre><code${cls}>${esc(code.join("\n"))}</code></pre>`);
        continue;
      }
      let m;
      if (!line.trim()) {
        flush();
        continue;
      }
      const table = tableStart(lines, i);
      if (table) {
        flush();
        const rows = [];
        for (i += 2; i < lines.length && lines[i].trim() && !fenceOpen(lines[i]); i++) rows.push(tableCells(lines[i]));
        i--;
        html.push(tableHtml(table.head, table.aligns, rows));
        continue;
      }
      if ((m = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line))) {
        flush();
        const n = m[1].length;
        html.push(`<h${n}>${inline(m[2])}</h${n}>`);
        continue;
      }
      if (/^ {0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        html.push("<hr>");
        continue;
      }
      if ((m = /^ {0,3}>\s?(.*)$/.exec(line))) {
        flush();
        html.push(`<blockquote>${inline(m[1])}</blockquote>`);
        continue;
      }
      if ((m = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line))) {
        const type = /\d/.test(m[1]) ? "ol" : "ul";
        flushPara();
        if (list && list.type !== type) flushList();
        if (!list) list = { type, items: [] };
        list.items.push(m[2]);
        continue;
      }
      if (list && /^\s+\S/.test(line)) {
        list.items[list.items.length - 1] += " " + line.trim();
        continue;
      }
      flushList();
      para.push(line);
    }
    flush();
    return html.join("");
  }

  // ------------------------------------------------------------------ server calls

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body; // multipart/form-data: the browser writes the Content-Type and boundary
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const reason = data && (data.error || (typeof data.detail === "string" && data.detail));
      if (!reason && res.status === 413) throw new Error("The message and its files are too large to send.");
      throw new Error(reason || `The server answered ${res.status}.`);
    }
    return data;
  }

  function notice(text) {
    const el = $("notice");
    el.textContent = text || "";
    el.hidden = !text;
    el.dataset.kind = "error";
  }

  function info(text) {
    notice(text);
    $("notice").dataset.kind = "info";
  }

  // ------------------------------------------------------------------ rendering

  function setStatus(status) {
    const el = $("status");
    el.dataset.status = status;
    el.textContent = LABELS[status] || status;
    state.busy = status === "pending" || status === "streaming";
    $("stop").disabled = !state.busy;
    $("send").disabled = state.busy;
  }

  // The note under a reply (an error, a stop, an empty answer) is the server's, the same line
  // every front end shows: the page writes none of its own.
  // The model's reasoning (SHOW_REASONING=full) in a collapsed section above the answer, as
  // plain text; none, none shown.
  function paintThought(el, text) {
    let box = el.querySelector("details.reasoning");
    if (!text) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("details");
      box.className = "reasoning";
      const summary = document.createElement("summary");
      summary.textContent = "💭 reasoning";
      const pre = document.createElement("div");
      pre.className = "thought";
      box.append(summary, pre);
      el.querySelector(".body").before(box);
    }
    box.querySelector(".thought").textContent = text;
  }

  // A reply's tool calls while it streams: a collapsible list, one line per call
  // ("🔧 files.read(path='a') …", then ✓ or ✗), open; the final note keeps a one-line summary.
  function paintTools(el, lines) {
    let box = el.querySelector("details.tools");
    if (!lines) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("details");
      box.className = "tools";
      box.open = true;
      const summary = document.createElement("summary");
      const list = document.createElement("ul");
      box.append(summary, list);
      el.querySelector(".body").before(box);
    }
    const items = lines.split("\n");
    box.querySelector("summary").textContent = `🔧 tools (${items.length})`;
    box.querySelector("ul").replaceChildren(
      ...items.map((line) => {
        const li = document.createElement("li");
        li.textContent = line;
        return li;
      }),
    );
  }

  // A tool call of a "confirm": true MCP server waits for Approve or Deny (the SSE "approvals"
  // event: [{call, line}]; empty once none waits). Denied after TOOL_CONFIRM_TIMEOUT seconds.
  function paintApprovals(el, calls) {
    let box = el.querySelector(".approvals");
    if (!calls || !calls.length) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("div");
      box.className = "approvals";
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", "Tool calls waiting for your approval");
      el.querySelector(".body").before(box);
    }
    box.replaceChildren(
      ...calls.map(({ call, line }) => {
        const row = document.createElement("div");
        row.className = "approval";
        const text = document.createElement("span");
        text.textContent = line;
        row.append(text);
        for (const [action, label] of [["approve", "✅ Approve"], ["deny", "✖️ Deny"]]) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = `ctl ctl-${action}`;
          b.dataset.action = action;
          b.dataset.call = String(call);
          b.textContent = label;
          row.append(b);
        }
        return row;
      }),
    );
  }

  function paintMessage(el, msg) {
    el.dataset.status = msg.status;
    const body = el.querySelector(".body");
    if (msg.role === "assistant") {
      body.innerHTML = renderMarkdown(msg.content);
      paintThought(el, msg.created_at != null ? state.thoughts[msg.created_at] : "");
      paintTools(el, "");
      paintApprovals(el, []);
    } else {
      body.textContent = msg.content;
      paintFiles(el, msg.attachments || []);
    }
    const note = el.querySelector(".note");
    note.textContent = msg.note || "";
    note.hidden = !msg.note;
  }

  // ------------------------------------------------------------------ reply buttons

  const BUTTONS = {
    stop: { text: "⏹ Stop", title: "Stop this reply" },
    regenerate: { text: "🔄 Regenerate", title: "Ask again for a new answer" },
    up: { text: "👍", title: "Good answer" },
    down: { text: "👎", title: "Bad answer" },
  };

  // A reply's buttons (the server decides what they do: core/controls.py): "streaming" shows
  // Stop, "final" Regenerate and, for a complete answer with text, 👍 and 👎 (pressed: the vote
  // given); "none" clears them. Only the latest reply gets the final ones.
  function paintControls(el, mode, msg = {}) {
    let box = el.querySelector(".controls");
    if (!box) {
      box = document.createElement("div");
      box.className = "controls";
      el.append(box);
    }
    const id = el.dataset.replyId;
    const names = !state.buttons || !id ? [] : mode === "streaming" ? ["stop"] : mode === "final" ? ["regenerate"] : [];
    if (mode === "final" && names.length && msg.status === "complete" && msg.content) names.push("up", "down");
    box.replaceChildren(
      ...names.map((name) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = `ctl ctl-${name}`;
        b.dataset.action = name;
        b.textContent = BUTTONS[name].text;
        b.title = BUTTONS[name].title;
        b.setAttribute("aria-label", BUTTONS[name].title);
        if (name === "up" || name === "down") {
          b.setAttribute("aria-pressed", String(msg.vote === (name === "up" ? 1 : -1)));
        }
        return b;
      }),
    );
    box.hidden = names.length === 0;
  }

  async function pressControl(el, action, call) {
    const id = el.dataset.replyId;
    if (!id) return;
    notice("");
    let result;
    const which = call != null ? `?call=${encodeURIComponent(call)}` : "";
    try {
      result = await api("POST", `/chat/${encodeURIComponent(state.id)}/replies/${encodeURIComponent(id)}/${action}${which}`);
    } catch (err) {
      notice(err.message);
      return;
    }
    if (result.regenerating) {
      // The new answer streams into this very message.
      closeStream();
      state.streamEl = el;
      state.streamText = "";
      el.querySelector(".body").textContent = "";
      el.querySelector(".note").hidden = true;
      delete el.dataset.replyId;
      paintControls(el, "none");
      setStatus("pending");
      openStream();
    } else if (action === "up" || action === "down") {
      for (const b of el.querySelectorAll(".ctl-up, .ctl-down")) {
        b.setAttribute("aria-pressed", String(result.vote === (b.dataset.action === "up" ? 1 : -1)));
      }
      info(result.text);
    } else if (result.text) {
      info(result.text);
    }
  }

  // A file chip: an image's thumbnail (a same-origin URL or a data: URL: the CSP allows no other)
  // or a 📄, then the name as text.
  function fileChip(file) {
    const chip = document.createElement("span");
    chip.className = "file-chip";
    chip.dataset.kind = file.kind;
    if (file.kind === "image" && file.url && /^(\/chat\/|data:image\/)/.test(file.url)) {
      const img = document.createElement("img");
      img.className = "thumb";
      img.src = file.url;
      img.alt = file.name;
      chip.append(img);
    } else {
      const icon = document.createElement("span");
      icon.textContent = file.kind === "image" ? "🖼" : "📄";
      chip.append(icon);
    }
    const name = document.createElement("span");
    name.textContent = file.name;
    name.title = file.name;
    chip.append(name);
    return chip;
  }

  function paintFiles(el, files) {
    let box = el.querySelector(".files");
    if (!files.length) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("div");
      box.className = "files";
      el.querySelector(".body").after(box);
    }
    box.replaceChildren(...files.map(fileChip));
  }

  // ------------------------------------------------------------------ files to send

  const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

  function paintPending() {
    const box = $("pending-files");
    box.replaceChildren(
      ...state.files.map((f, i) => {
        const chip = fileChip(f);
        const remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "×";
        remove.title = `Remove ${f.name}`;
        remove.addEventListener("click", () => {
          state.files.splice(i, 1);
          paintPending();
        });
        chip.append(remove);
        return chip;
      }),
    );
    box.hidden = state.files.length === 0;
  }

  function addFiles(list) {
    for (const file of list) {
      const entry = { file, name: file.name || "pasted", kind: IMAGE_TYPES.includes(file.type) ? "image" : "file" };
      state.files.push(entry);
      if (entry.kind === "image") {
        const reader = new FileReader();
        reader.onload = () => {
          entry.url = typeof reader.result === "string" ? reader.result : "";
          paintPending();
        };
        reader.readAsDataURL(file);
      }
    }
    paintPending();
  }

  function messageEl(msg) {
    const el = document.createElement("article");
    el.className = `msg ${msg.role === "user" ? "user" : "assistant"}`;
    if (msg.role === "assistant" && msg.id) el.dataset.replyId = msg.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = msg.role === "user" ? "you" : msg.model || "assistant";
    const body = document.createElement("div");
    body.className = "body";
    const note = document.createElement("div");
    note.className = "note";
    el.append(meta, body, note);
    paintMessage(el, msg);
    return el;
  }

  function appendMessage(msg) {
    const box = $("messages");
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const el = messageEl(msg);
    box.append(el);
    if (stick) box.scrollTop = box.scrollHeight;
    return el;
  }

  function paintStream(status) {
    const el = state.streamEl;
    if (!el) return;
    const box = $("messages");
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    el.dataset.status = status;
    el.querySelector(".body").innerHTML = renderMarkdown(state.streamText);
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function renderConversation(conv, withModel = true) {
    $("title").textContent = conv.title;
    document.title = `${conv.title} · LLMConnect`;
    const box = $("messages");
    box.replaceChildren();
    state.streamEl = null;
    state.buttons = conv.buttons !== false;
    let last = null;
    for (const msg of conv.messages) {
      const el = appendMessage(msg);
      if (msg.role === "assistant") last = { el, msg };
    }
    if (last && (last.msg.status === "pending" || last.msg.status === "streaming")) {
      state.streamEl = last.el;
      state.streamText = last.msg.content;
      paintControls(last.el, "streaming");
    } else if (last && !conv.busy) {
      paintControls(last.el, "final", last.msg);
    }
    box.scrollTop = box.scrollHeight;
    if (withModel) renderModels(conv.model);
    // Busy with nothing streaming yet: a prompt waits its turn.
    setStatus(conv.busy && !state.streamEl ? "pending" : last ? last.msg.status : "idle");
  }

  function renderModels(current) {
    const select = $("model");
    const names = state.models.includes(current) ? state.models : [current, ...state.models];
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        return option;
      }),
    );
    select.value = current;
    select.dataset.current = current;
  }

  async function renderList() {
    const { conversations } = await api("GET", "/api/conversations");
    const ul = $("conversations");
    ul.replaceChildren(
      ...conversations.map((c) => {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = `#${c.id}`;
        a.textContent = c.title;
        a.title = `${c.title} (${c.model})`;
        if (c.id === state.id) a.setAttribute("aria-current", "true");
        if (c.busy) a.classList.add("busy");
        li.append(a);
        return li;
      }),
    );
  }

  // ------------------------------------------------------------------ streaming

  function closeStream() {
    if (state.stream) state.stream.close();
    state.stream = null;
  }

  // Follow the conversation's reply: `start`, then `delta`s (a reattaching page first gets the
  // text so far as one delta), then `end`; the stream then closes and the conversation reloads.
  function openStream() {
    closeStream();
    const view = state.view;
    const es = new EventSource(`/chat/${encodeURIComponent(state.id)}/bot-stream`);
    state.stream = es;
    es.addEventListener("start", (e) => {
      const d = JSON.parse(e.data);
      if (!state.streamEl) state.streamEl = appendMessage({ role: "assistant", content: "", status: d.status, model: d.model });
      state.streamEl.querySelector(".meta").textContent = d.model;
      if (d.reply_id) state.streamEl.dataset.replyId = d.reply_id;
      paintControls(state.streamEl, "streaming");
      state.streamText = "";
      state.streamThought = "";
      setStatus(d.status);
    });
    // SHOW_REASONING=status: "💭 thinking… (12 s)" in the reply until its first text.
    es.addEventListener("status", (e) => {
      if (!state.streamEl || state.streamText) return;
      state.streamEl.querySelector(".body").textContent = JSON.parse(e.data);
    });
    es.addEventListener("tools", (e) => {
      if (!state.streamEl) return;
      paintTools(state.streamEl, JSON.parse(e.data));
    });
    es.addEventListener("approvals", (e) => {
      if (!state.streamEl) return;
      paintApprovals(state.streamEl, JSON.parse(e.data));
    });
    es.addEventListener("reasoning", (e) => {
      if (!state.streamEl) return;
      state.streamThought += JSON.parse(e.data);
      paintThought(state.streamEl, state.streamThought);
    });
    es.addEventListener("delta", (e) => {
      state.streamText += JSON.parse(e.data);
      paintStream("streaming");
      if ($("status").dataset.status !== "streaming") setStatus("streaming");
    });
    es.addEventListener("end", (e) => {
      es.close();
      if (state.stream === es) state.stream = null;
      if (view !== state.view) return;
      const d = JSON.parse(e.data);
      if (d.reasoning && d.created_at != null) state.thoughts[d.created_at] = d.reasoning;
      if (state.streamEl && d.status !== "idle") {
        paintMessage(state.streamEl, {
          role: "assistant",
          content: d.content,
          status: d.status,
          note: d.note,
          created_at: d.created_at,
        });
      }
      state.streamEl = null;
      load(view).then(() => {
        if (d.busy && view === state.view) openStream();
      });
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED && state.stream === es) {
        notice("The connection to the server was lost; reload the page.");
      }
    };
  }

  // ------------------------------------------------------------------ actions

  async function load(view) {
    const changes = state.modelChanges;
    try {
      const conv = await api("GET", `/chat/${encodeURIComponent(state.id)}`);
      if (view !== state.view) return null;
      renderConversation(conv, changes === state.modelChanges);
      await renderList();
      return conv;
    } catch (err) {
      notice(err.message);
      return null;
    }
  }

  async function openConversation() {
    closeStream();
    notice("");
    let id = decodeURIComponent(location.hash.slice(1));
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      // No conversation named: reuse an empty one rather than pile up "New chat" entries.
      const { conversations } = await api("GET", "/api/conversations");
      const empty = conversations.find((c) => c.size === 0 && !c.busy);
      id = empty ? empty.id : (await api("POST", "/api/conversations")).id;
      history.replaceState(null, "", `#${id}`);
    }
    state.id = id;
    const view = ++state.view;
    const conv = await load(view);
    if (conv && conv.busy && view === state.view) openStream();
  }

  async function send() {
    const input = $("input");
    const text = input.value.trim();
    const files = state.files;
    if ((!text && !files.length) || state.busy) return;
    notice("");
    let body = { text };
    if (files.length) {
      body = new FormData();
      body.append("text", text);
      for (const f of files) body.append("files", f.file, f.name);
    }
    // The first sign that the question was heard comes before the request leaves: the question
    // and a pending reply show at once (taken back if the server refuses), so the page shows it
    // before the LLM is even asked.
    const before = $("status").dataset.status || "idle";
    const attachments = files.map((f) => ({ name: f.name, kind: f.kind, url: f.url }));
    const asked = appendMessage({ role: "user", content: text, status: "complete", attachments });
    const pending = appendMessage({ role: "assistant", content: "", status: "pending" });
    setStatus("pending");
    try {
      await api("POST", `/chat/${encodeURIComponent(state.id)}/send-message`, body);
    } catch (err) {
      asked.remove();
      pending.remove();
      setStatus(before);
      notice(err.message);
      return;
    }
    input.value = "";
    state.files = [];
    paintPending();
    state.streamEl = pending;
    state.streamText = "";
    openStream();
    renderList().catch(() => {});
  }

  async function setModel() {
    const select = $("model");
    state.modelChanges++;
    try {
      const { model } = await api("POST", `/chat/${encodeURIComponent(state.id)}/model`, { model: select.value });
      select.dataset.current = model;
      notice("");
    } catch (err) {
      select.value = select.dataset.current;
      notice(err.message);
    }
  }

  async function post(action) {
    try {
      await api("POST", `/chat/${encodeURIComponent(state.id)}/${action}`);
      if (action === "reset") await load(state.view);
    } catch (err) {
      notice(err.message);
    }
  }

  async function showStatus() {
    // The same text as /status on Discord and Slack: tokens today and in total, cost, limits.
    try {
      const { text } = await api("GET", `/chat/${encodeURIComponent(state.id)}/status`);
      info(text);
    } catch (err) {
      notice(err.message);
    }
  }

  async function start() {
    try {
      const { models } = await api("GET", "/api/models");
      state.models = models;
      await openConversation();
    } catch (err) {
      notice(err.message);
    }
  }

  // ------------------------------------------------------------------ the narrow layout's drawer

  // Under 760 px (app.css) the sidebar is a drawer: the menu button opens it; picking a
  // conversation, "New chat", Escape or a tap outside it closes it. Above, none of this shows.
  const narrow = window.matchMedia("(max-width: 760px)");

  function setDrawer(open) {
    open = open && narrow.matches;
    document.body.classList.toggle("nav-open", open);
    $("menu").setAttribute("aria-expanded", String(open));
    $("menu").textContent = open ? "✕" : "☰";
    $("scrim").hidden = !open;
    if (open) $("new-chat").focus();
  }

  $("menu").addEventListener("click", () => setDrawer(!document.body.classList.contains("nav-open")));
  $("scrim").addEventListener("click", () => setDrawer(false));
  $("conversations").addEventListener("click", (e) => {
    if (e.target.closest("a")) setDrawer(false);
  });
  $("new-chat").addEventListener("click", () => setDrawer(false));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("nav-open")) {
      setDrawer(false);
      $("menu").focus();
    }
  });
  narrow.addEventListener("change", () => setDrawer(false));

  window.addEventListener("hashchange", () => openConversation().catch((err) => notice(err.message)));
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    addFiles(e.target.files);
    e.target.value = "";
  });
  $("input").addEventListener("paste", (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files] : [];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  const main = document.querySelector("main");
  main.addEventListener("dragover", (e) => {
    if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) {
      e.preventDefault();
      main.classList.add("dragging");
    }
  });
  main.addEventListener("dragleave", (e) => {
    if (e.target === main || !main.contains(e.relatedTarget)) main.classList.remove("dragging");
  });
  main.addEventListener("drop", (e) => {
    main.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      e.preventDefault();
      addFiles(e.dataTransfer.files);
    }
  });
  $("model").addEventListener("change", setModel);
  $("stop").addEventListener("click", () => post("stop"));
  $("messages").addEventListener("click", (e) => {
    const button = e.target.closest("button.ctl");
    const el = button && button.closest("article.msg");
    if (el) pressControl(el, button.dataset.action, button.dataset.call);
  });
  $("reset").addEventListener("click", () => post("reset"));
  $("usage").addEventListener("click", showStatus);
  $("new-chat").addEventListener("click", async () => {
    try {
      const { conversations } = await api("GET", "/api/conversations");
      const empty = conversations.find((c) => c.size === 0 && !c.busy);
      if (empty && empty.id === state.id) $("input").focus();
      else location.hash = empty ? empty.id : (await api("POST", "/api/conversations")).id;
    } catch (err) {
      notice(err.message);
    }
  });
  start();
})();
