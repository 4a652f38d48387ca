// nanobot's chat page: streams replies from /v1/chat/completions, keeps conversations in
// localStorage. No framework, no build step. Nothing from a reply is ever parsed as HTML:
// the Markdown renderer below builds DOM nodes and sets only textContent and checked hrefs.
"use strict";

(() => {
  const STORE = "nanobot.conversations";
  const KEY = "nanobot.apiKey";
  const MAX_KEPT = 100; // conversations kept in the browser
  const API = "v1/chat/completions"; // relative: works under a path prefix too

  const $ = (id) => document.getElementById(id);
  const model = document.querySelector('meta[name="nanobot-model"]').content;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ---------------------------------------------------------------- safe Markdown

  /** Text with its newlines as <br>. */
  function addText(parent, text) {
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      if (i) parent.append(el("br"));
      if (line) parent.append(document.createTextNode(line));
    });
  }

  /** An absolute http(s) URL, normalised; anything else (javascript:, data:, relative) is null. */
  function safeUrl(href) {
    if (!/^https?:\/\//i.test(href)) return null;
    try {
      const url = new URL(href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(parent, href, label) {
    const url = safeUrl(href);
    if (!url) {
      inline(parent, label);
      return;
    }
    const a = el("a");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    inline(a, label);
    parent.append(a);
  }

  const INLINE = new RegExp(
    [
      /\\([\\`*_{}[\]()#+\-.!~|>])/, // 1: an escaped character
      /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/, // 2, 3: code
      /\*\*(?=\S)([\s\S]*?\S)\*\*/, // 4: strong
      /__(?=\S)([\s\S]*?\S)__(?!\w)/, // 5: strong
      /\*(?=[^\s*])([^*]*?[^\s*])\*/, // 6: emphasis
      /(?<!\w)_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/, // 7: emphasis
      /~~(?=\S)([\s\S]*?\S)~~/, // 8: strikethrough
      /!?\[([^\]\n]*)\]\(\s*<?([^\s)>]*)>?(?:\s+"[^"\n]*")?\s*\)/, // 9, 10: link (images as links)
      /<(https?:\/\/[^\s>]+)>/, // 11: autolink
      /(https?:\/\/[^\s<]*[^\s<.,;:!?'")\]*_~])/, // 12: bare URL
    ]
      .map((r) => r.source)
      .join("|"),
    "g",
  );

  function inline(parent, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      addText(parent, text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] !== undefined) parent.append(document.createTextNode(m[1]));
      else if (m[3] !== undefined) parent.append(el("code", null, m[3]));
      else if (m[4] !== undefined || m[5] !== undefined) nest(parent, "strong", m[4] ?? m[5]);
      else if (m[6] !== undefined || m[7] !== undefined) nest(parent, "em", m[6] ?? m[7]);
      else if (m[8] !== undefined) nest(parent, "del", m[8]);
      else if (m[9] !== undefined) link(parent, m[10], m[9] || m[10]);
      else link(parent, m[11] ?? m[12], m[11] ?? m[12]);
    }
    addText(parent, text.slice(last));
  }

  function nest(parent, tag, text) {
    const node = el(tag);
    inline(node, text);
    parent.append(node);
  }

  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const RULE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}>\s?/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

  function startsBlock(line, next) {
    return (
      FENCE.test(line) ||
      HEADING.test(line) ||
      RULE.test(line) ||
      QUOTE.test(line) ||
      ITEM.test(line) ||
      (line.includes("|") && next !== undefined && TABLE_RULE.test(next))
    );
  }

  function cells(line) {
    return line
      .trim()
      .replace(/^\|/, "")
      .replace(/\|$/, "")
      .split(/(?<!\\)\|/)
      .map((cell) => cell.trim());
  }

  /** Markdown as a DocumentFragment of elements and text nodes. */
  function markdown(source) {
    const out = document.createDocumentFragment();
    const lines = source.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i++;
      } else if ((m = FENCE.exec(line))) {
        const code = [];
        for (i++; i < lines.length && !lines[i].trim().startsWith(m[1]); i++) code.push(lines[i]);
        i++;
        const pre = el("pre");
        const block = el("code", null, code.join("\n"));
        if (m[2]) block.dataset.lang = m[2];
        pre.append(block);
        out.append(pre);
      } else if ((m = HEADING.exec(line))) {
        nest(out, `h${m[1].length}`, m[2]);
        i++;
      } else if (RULE.test(line)) {
        out.append(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(QUOTE, ""));
        const quote = el("blockquote");
        quote.append(markdown(quoted.join("\n")));
        out.append(quote);
      } else if (ITEM.test(line)) {
        i = list(lines, i, out);
      } else if (line.includes("|") && TABLE_RULE.test(lines[i + 1] ?? "")) {
        i = table(lines, i, out);
      } else {
        const para = [line];
        for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1]); i++) para.push(lines[i]);
        nest(out, "p", para.join("\n"));
      }
    }
    return out;
  }

  function list(lines, i, out) {
    const first = ITEM.exec(lines[i]);
    const ordered = /\d/.test(first[2]);
    const indent = first[1].length;
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    const items = [];
    while (i < lines.length) {
      const line = lines[i];
      const m = ITEM.exec(line);
      if (m && m[1].length <= indent + 1 && /\d/.test(m[2]) === ordered) {
        items.push([m[3]]);
      } else if (line.trim() && /^\s/.test(line) && items.length) {
        items[items.length - 1].push(line.replace(/^\s{1,4}/, ""));
      } else if (!line.trim() && ITEM.test(lines[i + 1] ?? "") && items.length) {
        // a blank line between items: the list goes on
      } else if (!line.trim() && /^\s{2,}\S/.test(lines[i + 1] ?? "") && items.length) {
        items[items.length - 1].push("");
      } else {
        break;
      }
      i++;
    }
    for (const item of items) {
      const li = el("li");
      li.append(markdown(item.join("\n")));
      node.append(li);
    }
    out.append(node);
    return i;
  }

  function table(lines, i, out) {
    const node = el("table");
    const head = el("tr");
    for (const cell of cells(lines[i])) nest(head, "th", cell);
    const thead = el("thead");
    thead.append(head);
    node.append(thead);
    const body = el("tbody");
    for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
      const row = el("tr");
      for (const cell of cells(lines[i])) nest(row, "td", cell);
      body.append(row);
    }
    node.append(body);
    const wrap = el("div", "table");
    wrap.append(node);
    out.append(wrap);
    return i;
  }

  // ---------------------------------------------------------------- storage

  function loadConversations() {
    try {
      const stored = JSON.parse(localStorage.getItem(STORE) || "[]");
      if (!Array.isArray(stored)) return [];
      const kept = stored.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages));
      for (const message of kept.flatMap((c) => c.messages)) {
        if (message.streaming) Object.assign(message, { streaming: false, stopped: true }); // the page was left mid-reply
      }
      return kept;
    } catch {
      return [];
    }
  }

  function saveConversations() {
    conversations.sort((a, b) => b.updated - a.updated);
    try {
      localStorage.setItem(STORE, JSON.stringify(conversations.slice(0, MAX_KEPT)));
    } catch {
      // storage full or off: the page still works, without history
    }
  }

  function newId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---------------------------------------------------------------- state

  const conversations = loadConversations();
  let current = null; // the conversation shown; null: a new one, made on the first send
  let pending = []; // files chosen for the next message
  let running = null; // {controller} of the reply streaming now

  const messagesEl = $("messages");
  const input = $("input");

  // ---------------------------------------------------------------- rendering

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function fileChip(file, url) {
    const chip = el("li", "file");
    if (url && file.type.startsWith("image/")) {
      const img = el("img");
      img.src = url;
      img.alt = file.name;
      chip.append(img);
    }
    chip.append(el("span", "name", file.name), el("span", "size", formatSize(file.size)));
    return chip;
  }

  function userNode(message) {
    const node = el("article", "msg user");
    if (message.files && message.files.length) {
      const files = el("ul", "files");
      for (const file of message.files) files.append(fileChip(file, message.urls && message.urls[file.name]));
      node.append(files);
    }
    if (message.text) node.append(el("div", "text", message.text));
    return node;
  }

  /** An assistant reply's view: reasoning, tool calls, the answer and its figures. */
  class Reply {
    constructor(message) {
      this.message = message;
      this.node = el("article", "msg assistant");
      this.details = el("details", "reasoning");
      this.summary = el("summary", null, "Reasoning");
      this.reasoning = el("div", "reasoning-text");
      this.details.append(this.summary, this.reasoning);
      this.summary.addEventListener("click", () => (this.touched = true));
      this.tools = el("div", "tools");
      this.body = el("div", "content");
      this.status = el("div", "status");
      this.stats = el("div", "stats");
      this.node.append(this.details, this.tools, this.body, this.status, this.stats);
      this.touched = false;
      this.frame = 0;
      this.update();
    }

    schedule() {
      if (!this.frame) this.frame = requestAnimationFrame(() => this.update());
    }

    update() {
      this.frame = 0;
      const m = this.message;
      const follow = nearBottom();
      this.details.hidden = !m.reasoning;
      if (m.reasoning) {
        this.reasoning.textContent = m.reasoning;
        const thinking = m.streaming && !m.text;
        this.summary.textContent = thinking ? "Reasoning…" : "Reasoning";
        if (!this.touched) this.details.open = thinking;
      }
      this.tools.replaceChildren(
        ...(m.tools || []).map((call) => {
          const node = el("div", "tool-call");
          node.append(el("span", "tool-name", `${call.name || "tool"}(`), el("code", null, call.arguments), ")");
          return node;
        }),
      );
      this.body.replaceChildren(markdown(m.text || ""));
      this.node.classList.toggle("streaming", !!m.streaming);
      this.status.textContent = m.error || (m.stopped ? "Stopped." : "");
      this.status.className = m.error ? "status error" : "status";
      const s = m.stats;
      this.stats.replaceChildren();
      if (s) {
        this.stats.append(el("span", "ttft", `TTFT ${Math.round(s.ttft)} ms`));
        if (s.tps) this.stats.append(el("span", "tps", `${s.tps.toFixed(1)} tok/s`));
        this.stats.append(el("span", "tokens", `${s.tokens} tokens`));
      }
      if (follow) scrollDown();
    }
  }

  function nearBottom() {
    return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
  }

  function scrollDown() {
    messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function renderConversation() {
    messagesEl.replaceChildren();
    const messages = current ? current.messages : [];
    if (!messages.length) messagesEl.append(emptyHint);
    for (const message of messages) {
      messagesEl.append(message.role === "user" ? userNode(message) : new Reply(message).node);
    }
    scrollDown();
    renderSessions();
  }

  function renderSessions() {
    const list = $("sessions");
    list.replaceChildren(
      ...conversations.map((conversation) => {
        const item = el("li", conversation === current ? "session current" : "session");
        const open = el("button", "open", conversation.title || "New chat");
        open.type = "button";
        open.title = conversation.title || "";
        open.addEventListener("click", () => show(conversation));
        const remove = el("button", "delete quiet", "×");
        remove.type = "button";
        remove.setAttribute("aria-label", `Delete “${conversation.title}”`);
        remove.addEventListener("click", () => forget(conversation));
        item.append(open, remove);
        return item;
      }),
    );
  }

  function show(conversation) {
    stop();
    current = conversation;
    document.body.classList.remove("menu-open");
    renderConversation();
    input.focus();
  }

  function forget(conversation) {
    if (running && conversation === current) stop();
    conversations.splice(conversations.indexOf(conversation), 1);
    saveConversations();
    if (conversation === current) current = null;
    renderConversation();
  }

  function renderPending() {
    $("pending").replaceChildren(
      ...pending.map((entry, index) => {
        const chip = fileChip(entry.file, entry.url);
        const remove = el("button", "delete quiet", "×");
        remove.type = "button";
        remove.setAttribute("aria-label", `Remove ${entry.file.name}`);
        remove.addEventListener("click", () => {
          pending.splice(index, 1);
          renderPending();
        });
        chip.append(remove);
        return chip;
      }),
    );
  }

  function addFiles(files) {
    for (const file of files) {
      pending.push({ file, url: file.type.startsWith("image/") ? URL.createObjectURL(file) : null });
    }
    renderPending();
  }

  // ---------------------------------------------------------------- the API key

  function askKey(reason) {
    const dialog = $("key-dialog");
    $("key-reason").textContent = reason;
    $("key-input").value = "";
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          const key = $("key-input").value.trim();
          if (dialog.returnValue === "ok" && key) {
            localStorage.setItem(KEY, key);
            resolve(key);
            return;
          }
          if (dialog.returnValue === "forget") localStorage.removeItem(KEY);
          resolve(null);
        },
        { once: true },
      );
    });
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.error.message || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  /** POST the turn; on a 401, ask for the key and send it again. */
  async function post(build, signal) {
    for (;;) {
      const { body, headers } = build();
      const key = localStorage.getItem(KEY);
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(API, { method: "POST", headers, body, signal, cache: "no-store" });
      if (response.status !== 401) return response;
      const why = await errorMessage(response);
      const reason = key ? `The server refused the key: ${why}` : "This server needs an API key.";
      if (!(await askKey(reason))) throw new Error(why);
    }
  }

  // ---------------------------------------------------------------- streaming

  /** The data of each server-sent event of a response, as it arrives. */
  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  }

  function request(conversation, text, files) {
    if (files.length) {
      const form = new FormData();
      form.append("message", text);
      form.append("session_id", conversation.id);
      form.append("model", model);
      form.append("stream", "true");
      for (const file of files) form.append("files", file, file.name);
      return { body: form, headers: {} };
    }
    const body = {
      model,
      stream: true,
      stream_options: { include_usage: true },
      session_id: conversation.id,
      messages: [{ role: "user", content: text }],
    };
    return { body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
  }

  async function send() {
    const text = input.value;
    const files = pending.map((entry) => entry.file);
    if (running || (!text.trim() && !files.length)) return;
    if (!current) {
      current = { id: newId(), title: "", updated: Date.now(), messages: [] };
      conversations.unshift(current);
    }
    const conversation = current;
    const urls = Object.fromEntries(pending.filter((e) => e.url).map((e) => [e.file.name, e.url]));
    const user = { role: "user", text, files: files.map((f) => ({ name: f.name, type: f.type, size: f.size })) };
    Object.defineProperty(user, "urls", { value: urls, enumerable: false }); // shown now, not stored
    const reply = { role: "assistant", text: "", reasoning: "", tools: [], streaming: true };
    conversation.title ||= (text.trim() || files.map((f) => f.name).join(", ")).slice(0, 80);
    conversation.messages.push(user, reply);
    conversation.updated = Date.now();
    input.value = "";
    resize();
    pending = [];
    renderPending();
    saveConversations();
    renderConversation();
    const view = new Reply(reply);
    messagesEl.lastChild.replaceWith(view.node);
    await stream(conversation, view, text, files);
  }

  async function stream(conversation, view, text, files) {
    const reply = view.message;
    const controller = new AbortController();
    running = { controller };
    busy(true);
    const started = performance.now();
    let first = 0;
    let last = 0;
    let chunks = 0;
    let usage = null;
    try {
      const response = await post(() => request(conversation, text, files), controller.signal);
      if (!response.ok) {
        reply.error = await errorMessage(response);
        return;
      }
      for await (const data of events(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          reply.error = chunk.error.message || "The reply failed.";
          break;
        }
        if (chunk.usage && chunk.usage.completion_tokens) usage = chunk.usage.completion_tokens; // 0: not counted
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) continue;
        let got = false;
        if (delta.reasoning_content) {
          reply.reasoning += delta.reasoning_content;
          got = true;
        }
        if (delta.content) {
          reply.text += delta.content;
          got = true;
        }
        for (const call of delta.tool_calls || []) {
          const entry = (reply.tools[call.index || 0] ||= { name: "", arguments: "" });
          if (call.function && call.function.name) entry.name = call.function.name;
          if (call.function && call.function.arguments) entry.arguments += call.function.arguments;
          got = true;
        }
        if (got) {
          last = performance.now();
          first ||= last;
          chunks++;
          view.schedule();
        }
      }
    } catch (error) {
      if (controller.signal.aborted) reply.stopped = true;
      else reply.error = error.message || String(error);
    } finally {
      const tokens = usage ?? chunks;
      if (first) {
        const tps = tokens > 1 && last > first ? ((tokens - 1) * 1000) / (last - first) : null;
        reply.stats = { ttft: first - started, tps, tokens };
      }
      reply.streaming = false;
      if (running && running.controller === controller) running = null;
      busy(false);
      conversation.updated = Date.now();
      saveConversations();
      if (conversation === current) view.update();
      renderSessions();
    }
  }

  function stop() {
    if (running) running.controller.abort();
  }

  function busy(on) {
    $("send").hidden = on;
    $("stop").hidden = !on;
    document.body.classList.toggle("busy", on);
  }

  function resize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  // ---------------------------------------------------------------- wiring

  const emptyHint = $("empty");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener("input", resize);
  input.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData ? event.clipboardData.files : []);
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  const composer = $("composer");
  composer.addEventListener("dragover", (event) => event.preventDefault());
  composer.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(Array.from(event.dataTransfer ? event.dataTransfer.files : []));
  });
  $("files").addEventListener("change", (event) => {
    addFiles(Array.from(event.target.files));
    event.target.value = "";
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => show(null));
  $("menu").addEventListener("click", (event) => {
    event.stopPropagation();
    document.body.classList.toggle("menu-open");
  });
  document.querySelector("main").addEventListener("click", () => document.body.classList.remove("menu-open"));
  window.addEventListener("pagehide", () => {
    stop(); // leaving cuts the reply: it is kept as stopped, with what came
    saveConversations();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running && !$("key-dialog").open) stop();
  });
  $("key-button").addEventListener("click", () => askKey("The API key this page sends:"));

  renderConversation();
  input.focus();
})();
