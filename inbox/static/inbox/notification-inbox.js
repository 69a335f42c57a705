/**
 * <notification-inbox>: a drop-in web inbox for this notification backend.
 *
 * One file, no dependencies, no build step. Load it as a module or a classic script:
 *
 *   <script type="module" src="https://notifications.example.com/static/inbox/notification-inbox.js"></script>
 *   <notification-inbox api-url="https://notifications.example.com/api/v1"
 *                       stream-url="https://stream.example.com/api/v1"
 *                       recipient="42" token="<recipient token>" token-expires-at="2026-12-24T18:00:00Z">
 *   </notification-inbox>
 *
 * Attributes (all may change at any time):
 *   api-url           the API's base, ending in /api/v1 (default: /api/v1 on this page's origin)
 *   stream-url        where the live stream is served, ending in /api/v1 (default: api-url)
 *   recipient         the recipient's id (your user id)
 *   token             a recipient token (POST /api/v1/recipients/<id>/tokens/, asked by your server)
 *   token-expires-at  when the token expires (the `expires_at` of that answer); optional
 *   refresh-before    seconds before token-expires-at to ask for a new token (default 60)
 *   page-size         notifications per page (default 20, at most 200)
 *   strings           JSON of strings to replace (see DEFAULT_STRINGS), also the `strings` property
 *   lang              the language of dates (default: the page's)
 *
 * Events (bubbling, composed):
 *   notification-inbox:token-refresh   the token expires soon or was refused: set a new `token`
 *                                      (and `token-expires-at`); detail {recipient, reason, expiresAt}
 *   notification-inbox:unread-count    the unread count changed; detail {count, capped}
 *   notification-inbox:notification   a live notification arrived; detail: the notification
 *   notification-inbox:select          a notification was opened (clicked or Enter); detail: the notification
 *
 * Live updates come from the Server-Sent Events stream. After a reconnect, or a new token (which needs a
 * new EventSource), the stream is opened again with ?last_event_id=<the last event's id>, so nothing
 * delivered meanwhile is missed. Reconnects back off exponentially (1 s doubling to 30 s, with jitter).
 * Read-state changes made in any tab arrive as `state` events carrying the unread count, so every open
 * tab shows the same count.
 *
 * Theming: CSS custom properties on the element (--notification-inbox-accent, -bg, -fg, -muted,
 * -border, -badge-bg, -badge-fg, -unread-bg, -font, -radius, -width, -max-height, -shadow), and
 * ::part(bell | badge | panel | header | list | item | footer).
 */
(() => {
  "use strict";

  if (typeof customElements === "undefined" || customElements.get("notification-inbox")) return;

  const DEFAULT_STRINGS = {
    title: "Notifications",
    bell: "Notifications",
    bellUnread: "Notifications, {count} unread",
    markAllRead: "Mark all as read",
    markRead: "Mark as read",
    markUnread: "Mark as unread",
    archive: "Archive",
    unread: "Unread",
    empty: "You are all caught up.",
    loading: "Loading…",
    loadMore: "Load more",
    loadFailed: "Notifications could not be loaded.",
    retry: "Retry",
    close: "Close",
    actionFailed: "That did not work. Try again.",
    newNotification: "New notification: {text}",
    live: "Live",
    reconnecting: "Reconnecting…",
    from: "from {sender}",
  };
  const COUNT_LIMIT = 99; // the badge shows 99+
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const EVICTED_DELAY_MS = [10000, 20000]; // the server closed this stream for another: come back later

  const STYLE = `
    :host { display: inline-block; position: relative; font-family: var(--notification-inbox-font, system-ui, sans-serif);
      color: var(--notification-inbox-fg, #1f2328); --_accent: var(--notification-inbox-accent, #0969da); }
    :host([hidden]) { display: none; }
    * { box-sizing: border-box; }
    .sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
    button { font: inherit; color: inherit; cursor: pointer; }
    button:focus-visible, article:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
    .bell { position: relative; display: inline-flex; align-items: center; justify-content: center; width: 2.5em;
      height: 2.5em; border-radius: 50%; border: 1px solid transparent; background: transparent; }
    .bell:hover { background: var(--notification-inbox-unread-bg, #ddf4ff); }
    .bell svg { width: 1.4em; height: 1.4em; fill: currentColor; }
    .badge { position: absolute; top: 0; right: 0; min-width: 1.4em; padding: 0 .35em; border-radius: .7em;
      font-size: .7em; line-height: 1.4em; text-align: center; font-weight: 600;
      background: var(--notification-inbox-badge-bg, #cf222e); color: var(--notification-inbox-badge-fg, #fff); }
    .badge[hidden] { display: none; }
    .panel { position: absolute; right: 0; top: calc(100% + .4em); z-index: 1000;
      width: var(--notification-inbox-width, 24em); max-width: 95vw; display: flex; flex-direction: column;
      max-height: var(--notification-inbox-max-height, 32em); background: var(--notification-inbox-bg, #fff);
      border: 1px solid var(--notification-inbox-border, #d0d7de); border-radius: var(--notification-inbox-radius, .5em);
      box-shadow: var(--notification-inbox-shadow, 0 8px 24px rgba(140,149,159,.3)); }
    .panel[hidden] { display: none; }
    header { display: flex; align-items: center; gap: .5em; padding: .6em .8em;
      border-bottom: 1px solid var(--notification-inbox-border, #d0d7de); }
    header h2 { flex: 1; margin: 0; font-size: 1em; }
    .link { border: 0; background: none; color: var(--_accent); padding: .2em .3em; font-size: .85em; white-space: nowrap; }
    .link:disabled { color: var(--notification-inbox-muted, #656d76); cursor: default; }
    .status { font-size: .7em; color: var(--notification-inbox-muted, #656d76); }
    .status:not(:empty)::before { content: "● "; }
    .list { overflow-y: auto; flex: 1; margin: 0; padding: 0; }
    article { position: relative; padding: .6em .8em .6em 1.6em; border-bottom: 1px solid var(--notification-inbox-border, #d0d7de); }
    article.unread { background: var(--notification-inbox-unread-bg, #ddf4ff); }
    article.unread::before { content: ""; position: absolute; left: .6em; top: 1em; width: .5em; height: .5em;
      border-radius: 50%; background: var(--_accent); }
    .item-title { font-weight: 600; }
    .item-message { white-space: pre-wrap; overflow-wrap: anywhere; }
    .meta { font-size: .75em; color: var(--notification-inbox-muted, #656d76); margin-top: .2em; }
    .actions { display: flex; gap: .3em; margin-top: .3em; }
    .actions button { border: 1px solid var(--notification-inbox-border, #d0d7de); background: transparent;
      border-radius: .3em; padding: .1em .5em; font-size: .75em; }
    .note { padding: 1.2em .8em; text-align: center; color: var(--notification-inbox-muted, #656d76); }
    .note[hidden], .more[hidden] { display: none; }
    .more { display: block; width: 100%; border: 0; background: none; color: var(--_accent); padding: .6em; }
    .sentinel { height: 1px; }
  `;
  const BELL_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z"/></svg>';

  let instances = 0;

  class NotificationInbox extends HTMLElement {
    static get observedAttributes() {
      return ["api-url", "stream-url", "recipient", "token", "token-expires-at", "refresh-before", "page-size", "strings", "lang"];
    }

    constructor() {
      super();
      this._uid = `notification-inbox-${++instances}`;
      this._customStrings = {};
      this._items = new Map(); // notification id -> {data, element}
      this._order = []; // ids, newest first
      this._next = null; // the next page's URL (null: no more, or not loaded)
      this._loaded = false;
      this._loading = false;
      this._count = 0;
      this._capped = false;
      this._lastEventId = null; // the last stream event's id (an inbox row id)
      this._source = null;
      this._reconnectTimer = null;
      this._refreshTimer = null;
      this._countTimer = null;
      this._backoff = BACKOFF_MIN_MS;
      this._connected = false;
      this._generation = 0; // bumped whenever recipient or endpoints change: stale answers are dropped
      this._build();
    }

    // --- public API --------------------------------------------------------------------------------

    get strings() { return { ...DEFAULT_STRINGS, ...this._attributeStrings(), ...this._customStrings }; }
    set strings(value) { this._customStrings = { ...(value || {}) }; this._renderAll(); }
    get token() { return this.getAttribute("token") || ""; }
    set token(value) { this.setAttribute("token", value); }
    get unreadCount() { return this._count; }
    get lastEventId() { return this._lastEventId; } // the stream's last event id (an inbox row id), or null
    get notifications() { return this._order.map((id) => this._items.get(id).data); }
    get open() { return !this._panel.hidden; }
    set open(value) { value ? this.show() : this.hide(); }

    show() {
      if (!this._panel.hidden) return;
      this._panel.hidden = false;
      this._bell.setAttribute("aria-expanded", "true");
      if (!this._loaded && !this._loading) this._loadFirstPage();
      const first = this._list.querySelector("article");
      (first || this._closeButton).focus();
      this._focusFirstWhenLoaded = !first; // opened before the first page: focus it once it is there
    }

    hide({ focusBell = true } = {}) {
      if (this._panel.hidden) return;
      this._panel.hidden = true;
      this._bell.setAttribute("aria-expanded", "false");
      if (focusBell) this._bell.focus();
    }

    toggle() { this._panel.hidden ? this.show() : this.hide(); }

    async markRead(id) { return this._mark(id, "read"); }
    async markUnread(id) { return this._mark(id, "unread"); }
    async archive(id) { return this._mark(id, "archive"); }

    async markAllRead() {
      const before = this._order.filter((id) => !this._items.get(id).data.read_at);
      const now = new Date().toISOString();
      before.forEach((id) => this._update({ ...this._items.get(id).data, read_at: now, seen_at: this._items.get(id).data.seen_at || now }));
      this._setCount(0, false);
      try {
        await this._request("POST", `${this._inboxUrl()}read-all/`, {});
      } catch (error) {
        this._announce(this.strings.actionFailed);
      }
      this._refreshCountSoon();
    }

    // --- lifecycle -----------------------------------------------------------------------------------

    connectedCallback() {
      this._connected = true;
      document.addEventListener("click", this._onDocumentClick);
      this._restart();
    }

    disconnectedCallback() {
      this._connected = false;
      document.removeEventListener("click", this._onDocumentClick);
      this._stop();
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (oldValue === newValue || !this._connected) {
        if (name === "strings" || name === "lang") this._renderAll();
        return;
      }
      if (name === "token") {
        this._scheduleTokenRefresh();
        // A new token needs a new EventSource: resume after the last event seen (the count is read first).
        this._reconnect(0);
        if (!this._loaded && !this._loading) this._loadFirstPage(); // a first page refused with the old token
      } else if (name === "token-expires-at" || name === "refresh-before") {
        this._scheduleTokenRefresh();
      } else if (name === "strings" || name === "lang") {
        this._renderAll();
      } else if (name === "page-size") {
        // Applies to the next page loaded.
      } else {
        this._restart(); // another recipient or server: start over
      }
    }

    // --- building the DOM (once) -------------------------------------------------------------------------

    _build() {
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = `
        <style>${STYLE}</style>
        <button class="bell" part="bell" type="button" aria-haspopup="dialog" aria-expanded="false" aria-controls="panel">
          ${BELL_SVG}<span class="badge" part="badge" aria-hidden="true" hidden></span>
        </button>
        <div class="panel" part="panel" id="panel" role="dialog" aria-modal="false" aria-labelledby="title" hidden>
          <header part="header">
            <h2 id="title"></h2>
            <span class="status" role="status"></span>
            <button class="link mark-all" type="button"></button>
            <button class="link close" type="button"></button>
          </header>
          <div class="list" part="list" role="feed" aria-labelledby="title" aria-busy="false"></div>
          <p class="note" part="footer" hidden></p>
          <button class="more" type="button" hidden></button>
        </div>
        <div class="sr-only live" aria-live="polite" aria-atomic="true"></div>`;
      this._bell = root.querySelector(".bell");
      this._badge = root.querySelector(".badge");
      this._panel = root.querySelector(".panel");
      this._title = root.querySelector("#title");
      this._status = root.querySelector(".status");
      this._markAllButton = root.querySelector(".mark-all");
      this._closeButton = root.querySelector(".close");
      this._list = root.querySelector(".list");
      this._note = root.querySelector(".note");
      this._moreButton = root.querySelector(".more");
      this._live = root.querySelector(".live");
      this._sentinel = document.createElement("div");
      this._sentinel.className = "sentinel";
      this._sentinel.setAttribute("aria-hidden", "true");

      this._bell.addEventListener("click", () => this.toggle());
      this._closeButton.addEventListener("click", () => this.hide());
      this._markAllButton.addEventListener("click", () => this.markAllRead());
      this._moreButton.addEventListener("click", () => (this._loaded ? this._loadNextPage() : this._loadFirstPage()));
      this._panel.addEventListener("keydown", (event) => this._onKeydown(event));
      this._list.addEventListener("click", (event) => this._onListClick(event));
      this._onDocumentClick = (event) => {
        if (!event.composedPath().includes(this)) this.hide({ focusBell: false }); // a click outside closes it
      };
      if (typeof IntersectionObserver !== "undefined") {
        this._observer = new IntersectionObserver((entries) => {
          if (entries.some((entry) => entry.isIntersecting) && this._next && !this._loading) this._loadNextPage();
        }, { root: this._list, rootMargin: "0px 0px 200px 0px" });
      }
      this._renderAll();
    }

    _attributeStrings() {
      const raw = this.getAttribute("strings");
      if (!raw) return {};
      try {
        const parsed = JSON.parse(raw);
        return parsed && typeof parsed === "object" ? parsed : {};
      } catch (error) {
        return {};
      }
    }

    _format(template, values) {
      return String(template).replace(/\{(\w+)\}/g, (match, key) => (key in values ? String(values[key]) : match));
    }

    _renderAll() {
      if (!this._bell) return;
      const s = this.strings;
      this._title.textContent = s.title;
      this._markAllButton.textContent = s.markAllRead;
      this._closeButton.textContent = s.close;
      this._moreButton.textContent = s.loadMore;
      this._renderCount();
      this._renderNote();
      for (const id of this._order) this._renderItem(this._items.get(id));
    }

    // --- the unread count -------------------------------------------------------------------------------

    _setCount(count, capped) {
      const changed = count !== this._count || capped !== this._capped;
      this._count = Math.max(0, count);
      this._capped = Boolean(capped);
      this._renderCount();
      if (changed) this._emit("unread-count", { count: this._count, capped: this._capped });
    }

    _renderCount() {
      const s = this.strings;
      const shown = this._capped || this._count > COUNT_LIMIT ? `${COUNT_LIMIT}+` : String(this._count);
      this._badge.textContent = shown;
      this._badge.hidden = this._count === 0;
      this._bell.setAttribute("aria-label", this._count ? this._format(s.bellUnread, { count: shown }) : s.bell);
      this._markAllButton.disabled = this._count === 0;
    }

    async _fetchCount() {
      const generation = this._generation;
      const answer = await this._request("GET", `${this._inboxUrl()}unread-count/?limit=${COUNT_LIMIT}`);
      if (generation === this._generation) this._setCount(answer.count, answer.capped);
      return answer;
    }

    _refreshCountSoon(delay = 300) {
      clearTimeout(this._countTimer);
      this._countTimer = setTimeout(() => this._fetchCount().catch(() => {}), delay);
    }

    // --- pages -----------------------------------------------------------------------------------------

    _apiBase() {
      return (this.getAttribute("api-url") || new URL("/api/v1", document.baseURI).href).replace(/\/+$/, "");
    }

    _streamBase() {
      return (this.getAttribute("stream-url") || this._apiBase()).replace(/\/+$/, "");
    }

    _inboxUrl(base = this._apiBase()) {
      return `${base}/recipients/${encodeURIComponent(this.getAttribute("recipient") || "")}/notifications/`;
    }

    _pageSize() {
      const size = parseInt(this.getAttribute("page-size") || "20", 10);
      return Number.isFinite(size) && size > 0 ? Math.min(size, 200) : 20;
    }

    async _loadFirstPage() {
      if (!this._ready()) return;
      await this._loadPage(`${this._inboxUrl()}?page_size=${this._pageSize()}`, true);
    }

    async _loadNextPage() {
      if (this._next) await this._loadPage(this._next, false);
    }

    async _loadPage(url, first) {
      const generation = this._generation;
      this._loading = true;
      this._list.setAttribute("aria-busy", "true");
      this._renderNote();
      try {
        const page = await this._request("GET", url);
        if (generation !== this._generation) return;
        for (const notification of page.results || []) this._add(notification, { atTop: false });
        if (first) this._loaded = true;
        if (first || this._next === url) this._next = page.next || null;
        this._failed = false;
        this._renumber(); // aria-setsize is known once the last page is in
      } catch (error) {
        if (generation === this._generation) this._failed = true;
      } finally {
        if (generation === this._generation) {
          this._loading = false;
          this._list.setAttribute("aria-busy", "false");
          this._renderNote();
          this._watchSentinel();
          const first = this._list.querySelector("article");
          if (this._focusFirstWhenLoaded && first && this.open && this.shadowRoot.activeElement === this._closeButton) first.focus();
          this._focusFirstWhenLoaded = false;
        }
      }
    }

    _watchSentinel() {
      if (!this._observer) return;
      this._observer.disconnect();
      if (this._next) {
        this._list.appendChild(this._sentinel);
        this._observer.observe(this._sentinel);
      } else {
        this._sentinel.remove();
      }
    }

    _renderNote() {
      if (!this._note) return;
      const s = this.strings;
      let text = "";
      if (this._loading) text = s.loading;
      else if (this._failed) text = s.loadFailed;
      else if (this._loaded && this._order.length === 0) text = s.empty;
      this._note.textContent = text;
      this._note.hidden = !text;
      this._moreButton.hidden = this._loading || !(this._next || this._failed);
      this._moreButton.textContent = this._failed ? s.retry : s.loadMore;
    }

    // --- items ----------------------------------------------------------------------------------------

    _add(notification, { atTop }) {
      if (!notification || typeof notification.id !== "string") return false;
      if (notification.archived_at) return false;
      const known = this._items.get(notification.id);
      if (known) {
        known.data = notification;
        this._renderItem(known);
        return false;
      }
      const element = document.createElement("article");
      element.setAttribute("part", "item");
      element.tabIndex = 0;
      const entry = { data: notification, element };
      this._items.set(notification.id, entry);
      if (atTop) {
        this._order.unshift(notification.id);
        this._list.insertBefore(element, this._list.firstChild);
      } else {
        // Pages come newest first; a page may overlap live items already shown: keep the id order.
        this._order.push(notification.id);
        this._list.insertBefore(element, this._sentinel.parentNode === this._list ? this._sentinel : null);
      }
      this._renderItem(entry);
      this._renumber();
      this._renderNote(); // no longer empty
      return true;
    }

    _remove(id) {
      const entry = this._items.get(id);
      if (!entry) return;
      const hadFocus = this.shadowRoot.activeElement && entry.element.contains(this.shadowRoot.activeElement);
      const next = entry.element.nextElementSibling || entry.element.previousElementSibling;
      entry.element.remove();
      this._items.delete(id);
      this._order = this._order.filter((other) => other !== id);
      this._renumber();
      this._renderNote();
      if (hadFocus) (next && next.tagName === "ARTICLE" ? next : this._closeButton).focus();
    }

    _update(notification) {
      if (notification.archived_at) return this._remove(notification.id);
      const entry = this._items.get(notification.id);
      if (entry) {
        entry.data = notification;
        this._renderItem(entry);
      }
    }

    _renumber() {
      this._order.forEach((id, index) => {
        const element = this._items.get(id).element;
        element.setAttribute("aria-posinset", String(index + 1));
        element.setAttribute("aria-setsize", this._next ? "-1" : String(this._order.length));
      });
    }

    _renderItem(entry) {
      if (!entry) return;
      const s = this.strings;
      const n = entry.data;
      const element = entry.element;
      const unread = !n.read_at;
      element.className = unread ? "unread" : "";
      element.dataset.id = n.id;
      element.dataset.kind = n.kind || "";
      element.replaceChildren();
      const labelId = `${this._uid}-${this._order.indexOf(n.id)}-${Math.random().toString(36).slice(2, 8)}`;
      if (unread) {
        const marker = document.createElement("span");
        marker.className = "sr-only";
        marker.textContent = `${s.unread}: `;
        element.appendChild(marker);
      }
      const text = document.createElement("div");
      text.id = labelId;
      if (n.title) {
        const title = document.createElement("div");
        title.className = "item-title";
        title.textContent = n.title; // textContent only: notification text is never markup
        text.appendChild(title);
      }
      const message = document.createElement("div");
      message.className = "item-message";
      message.textContent = n.message || "";
      text.appendChild(message);
      element.appendChild(text);
      const meta = document.createElement("div");
      meta.className = "meta";
      const time = document.createElement("time");
      if (n.created_at) {
        time.dateTime = n.created_at;
        time.textContent = this._relative(n.created_at);
        time.title = new Date(n.created_at).toLocaleString(this._lang());
      }
      meta.appendChild(time);
      if (n.sender) meta.appendChild(document.createTextNode(` · ${this._format(s.from, { sender: n.sender })}`));
      element.appendChild(meta);
      const actions = document.createElement("div");
      actions.className = "actions";
      actions.appendChild(this._actionButton(unread ? "read" : "unread", unread ? s.markRead : s.markUnread, n));
      actions.appendChild(this._actionButton("archive", s.archive, n));
      element.appendChild(actions);
      element.setAttribute("aria-labelledby", labelId);
    }

    _actionButton(action, label, notification) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = label;
      const subject = notification.title || notification.message || "";
      button.setAttribute("aria-label", `${label}: ${subject.slice(0, 80)}`);
      return button;
    }

    _lang() {
      return this.getAttribute("lang") || document.documentElement.lang || undefined;
    }

    _relative(iso) {
      const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
      const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
      try {
        const format = new Intl.RelativeTimeFormat(this._lang(), { numeric: "auto" });
        for (const [unit, size] of units) {
          if (Math.abs(seconds) >= size || unit === "second") return format.format(Math.round(seconds / size), unit);
        }
      } catch (error) {
        return new Date(iso).toLocaleString();
      }
      return "";
    }

    async _mark(id, action) {
      const entry = this._items.get(id);
      if (!entry) return null;
      const before = entry.data;
      const now = new Date().toISOString();
      // Shown at once; the answer (and the stream's state event) confirm it.
      if (action === "read") this._update({ ...before, read_at: before.read_at || now, seen_at: before.seen_at || now });
      if (action === "unread") this._update({ ...before, read_at: null });
      if (action === "archive") this._remove(id);
      const countDelta = action === "read" && !before.read_at ? -1 : action === "unread" && before.read_at ? 1
        : action === "archive" && !before.read_at ? -1 : 0;
      if (countDelta && !this._capped) this._setCount(this._count + countDelta, false);
      try {
        const notification = await this._request("POST", `${this._inboxUrl()}${encodeURIComponent(id)}/${action}/`);
        if (action !== "archive") this._update(notification);
        this._refreshCountSoon();
        return notification;
      } catch (error) {
        if (action === "archive") this._add(before, { atTop: false });
        else this._update(before);
        this._refreshCountSoon(0);
        this._announce(this.strings.actionFailed);
        return null;
      }
    }

    _onListClick(event) {
      const button = event.target.closest("button[data-action]");
      const article = event.target.closest("article");
      if (!article) return;
      const id = article.dataset.id;
      if (button) {
        const action = button.dataset.action;
        if (action === "read") this.markRead(id);
        else if (action === "unread") this.markUnread(id);
        else if (action === "archive") this.archive(id);
        return;
      }
      this._select(id);
    }

    _select(id) {
      const entry = this._items.get(id);
      if (!entry) return;
      this._emit("select", entry.data);
      if (!entry.data.read_at) this.markRead(id);
    }

    _onKeydown(event) {
      if (event.key === "Escape") {
        event.preventDefault();
        this.hide();
        return;
      }
      const article = event.target.closest ? event.target.closest("article") : null;
      const articles = [...this._list.querySelectorAll("article")];
      if (!articles.length) return;
      const index = article ? articles.indexOf(article) : -1;
      let target = null;
      if (event.key === "ArrowDown" || event.key === "PageDown") target = articles[Math.min(index + 1, articles.length - 1)];
      else if (event.key === "ArrowUp" || event.key === "PageUp") target = articles[Math.max(index - 1, 0)];
      else if (event.key === "Home" && article) target = articles[0];
      else if (event.key === "End" && article) target = articles[articles.length - 1];
      else if (event.key === "Enter" && article && event.target === article) {
        event.preventDefault();
        this._select(article.dataset.id);
        return;
      }
      if (target) {
        event.preventDefault();
        target.focus();
        if (target === articles[articles.length - 1] && this._next && !this._loading) this._loadNextPage();
      }
    }

    // --- the live stream ----------------------------------------------------------------------------

    _ready() {
      return Boolean(this.getAttribute("recipient") && this.token);
    }

    _restart() {
      this._stop();
      this._generation += 1;
      this._items.clear();
      this._order = [];
      this._list.replaceChildren();
      this._next = null;
      this._loaded = false;
      this._loading = false;
      this._failed = false;
      this._lastEventId = null;
      this._backoff = BACKOFF_MIN_MS;
      this._setCount(0, false);
      this._renderNote();
      if (!this._connected || !this._ready()) return;
      this._scheduleTokenRefresh();
      this._reconnect(0);
      this._loadFirstPage();
    }

    _stop() {
      clearTimeout(this._reconnectTimer);
      clearTimeout(this._refreshTimer);
      clearTimeout(this._countTimer);
      if (this._source) this._source.close();
      this._source = null;
      if (this._observer) this._observer.disconnect();
    }

    _reconnect(delay) {
      clearTimeout(this._reconnectTimer);
      if (this._source) {
        this._source.close();
        this._source = null;
      }
      if (!this._connected || !this._ready()) return;
      this._reconnectTimer = setTimeout(() => this._openStream(), delay);
    }

    _retryLater() {
      const delay = Math.min(this._backoff, BACKOFF_MAX_MS) * (0.8 + Math.random() * 0.4);
      this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
      this._setStatus(this.strings.reconnecting);
      this._reconnect(delay);
    }

    async _openStream() {
      const generation = this._generation;
      const token = this.token;
      // The count first: it resynchronises after time away, and tells a refused token from an outage
      // (an EventSource does not say why it failed).
      try {
        await this._fetchCount();
      } catch (error) {
        if (generation !== this._generation || token !== this.token) return;
        if (error.status === 401) return; // _request asked for a new token; its arrival reconnects
        if (error.status === 404 || error.status === 403) return this._setStatus(this.strings.loadFailed);
        return this._retryLater();
      }
      if (generation !== this._generation || token !== this.token || this._source) return;
      const params = new URLSearchParams({ access_token: token });
      if (this._lastEventId) params.set("last_event_id", this._lastEventId);
      const source = new EventSource(`${this._inboxUrl(this._streamBase())}stream/?${params}`);
      this._source = source;
      const mine = (handler) => (event) => { if (this._source === source) handler(event); };
      source.addEventListener("open", mine(() => {
        this._backoff = BACKOFF_MIN_MS;
        this._setStatus(this.strings.live);
        if (!this._lastEventId) {
          // Opened without an event id, the stream starts after the newest row: what arrived between the
          // count (or the first page) and now is read once more.
          if (this._loaded) this._mergeNewest();
          this._refreshCountSoon(0);
        }
      }));
      source.addEventListener("notification", mine((event) => this._onNotification(event)));
      source.addEventListener("state", mine((event) => this._onState(event)));
      source.addEventListener("close", mine((event) => this._onServerClose(event)));
      source.addEventListener("error", mine(() => {
        // Whatever the browser would do, we reconnect ourselves: with backoff, the last event id as
        // ?last_event_id= and, if the token was refused meanwhile, after asking for a new one.
        source.close();
        this._source = null;
        this._retryLater();
      }));
    }

    async _mergeNewest() {
      try {
        const page = await this._request("GET", `${this._inboxUrl()}?page_size=${this._pageSize()}`);
        for (const notification of (page.results || []).slice().reverse()) {
          if (this._items.has(notification.id)) this._update(notification);
          else this._add(notification, { atTop: true });
        }
      } catch (error) {
        // the next event or reconnect tries again
      }
    }

    _onNotification(event) {
      if (event.lastEventId) this._lastEventId = event.lastEventId;
      let notification;
      try {
        notification = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      const added = this._add(notification, { atTop: true });
      if (added && !notification.read_at && !notification.archived_at && !this._capped) this._setCount(this._count + 1, false);
      if (added) {
        this._announce(this._format(this.strings.newNotification, { text: notification.title || notification.message || "" }));
        this._emit("notification", notification);
      }
      this._refreshCountSoon(); // the server's count settles any race with a page or another tab
    }

    _onState(event) {
      let change;
      try {
        change = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      const now = new Date().toISOString();
      if (change.action === "read-all") {
        let reached = change.up_to == null;
        for (const id of this._order) {
          if (!reached && id === change.up_to) reached = true;
          const data = this._items.get(id).data;
          if (reached && !data.read_at) this._update({ ...data, read_at: now, seen_at: data.seen_at || now });
        }
      } else if (Array.isArray(change.ids)) {
        for (const id of change.ids) {
          const entry = this._items.get(id);
          if (change.action === "archive") this._remove(id);
          else if (change.action === "unarchive") this._refreshCountSoon(0);
          if (!entry) continue;
          if (change.action === "read") this._update({ ...entry.data, read_at: entry.data.read_at || now, seen_at: entry.data.seen_at || now });
          else if (change.action === "unread") this._update({ ...entry.data, read_at: null });
          else if (change.action === "seen") this._update({ ...entry.data, seen_at: entry.data.seen_at || now });
        }
        if (change.action === "unarchive") this._mergeNewest();
      } else if (change.action === "sync" && this._loaded) {
        this._mergeNewest(); // the count changed elsewhere (SQLite says no more): the newest page again
      }
      if (typeof change.unread_count === "number") {
        const capped = change.unread_count > COUNT_LIMIT;
        this._setCount(capped ? COUNT_LIMIT : change.unread_count, capped);
      }
    }

    _onServerClose(event) {
      let reason = "";
      try {
        reason = JSON.parse(event.data).reason;
      } catch (error) {
        // unknown: treated as an outage
      }
      this._source.close();
      this._source = null;
      if (reason === "revoked") return this._askForToken("revoked");
      if (reason === "deleted") return this._setStatus("");
      if (reason === "replaced" || reason === "busy") {
        const [low, high] = EVICTED_DELAY_MS;
        return this._reconnect(low + Math.random() * (high - low));
      }
      this._retryLater();
    }

    // --- tokens ---------------------------------------------------------------------------------------

    _scheduleTokenRefresh() {
      clearTimeout(this._refreshTimer);
      const expires = Date.parse(this.getAttribute("token-expires-at") || "");
      if (!Number.isFinite(expires)) return;
      const before = parseFloat(this.getAttribute("refresh-before") || "60");
      let delay = expires - (Number.isFinite(before) ? before : 60) * 1000 - Date.now();
      // Tokens shorter-lived than refresh-before would have it ask again at once, forever: 10 s apart at least.
      if (this._askedAt) delay = Math.max(delay, this._askedAt + 10000 - Date.now());
      // setTimeout holds at most about 24.8 days.
      this._refreshTimer = setTimeout(() => this._askForToken("expiring"), Math.max(0, Math.min(delay, 2 ** 31 - 1)));
    }

    _askForToken(reason) {
      if (reason === "expiring") this._askedAt = Date.now();
      if (reason !== "expiring") this._setStatus(this.strings.reconnecting); // until a new token arrives
      this._emit("token-refresh", {
        recipient: this.getAttribute("recipient"),
        reason,
        expiresAt: this.getAttribute("token-expires-at"),
      });
    }

    // --- plumbing ----------------------------------------------------------------------------------------

    async _request(method, url, body) {
      const headers = { Accept: "application/json", Authorization: `Bearer ${this.token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit" });
      if (!response.ok) {
        const error = new Error(`${method} ${url}: ${response.status}`);
        error.status = response.status;
        if (response.status === 401) this._askForToken("rejected");
        throw error;
      }
      return response.json();
    }

    _setStatus(text) {
      this._status.textContent = text || "";
    }

    _announce(text) {
      this._live.textContent = "";
      // A new text node each time, so that screen readers announce repeats too.
      setTimeout(() => { this._live.textContent = text; }, 50);
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent(`notification-inbox:${name}`, { detail, bubbles: true, composed: true }));
    }
  }

  customElements.define("notification-inbox", NotificationInbox);
})();
