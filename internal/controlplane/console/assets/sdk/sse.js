/**
 * A Server-Sent Events parser: the part of the WHATWG EventSource rules the API uses, fed
 * with text as it arrives (chunks may end anywhere, even between a CR and its LF).
 */
/**
 * Turns a stream's text into events. Comment lines (`:` first) are skipped, `data` lines are
 * joined with newlines, an event without `event:` has type `"message"`, and an event with no
 * data is not dispatched, as EventSource does. An event cut off by the end of the stream is
 * never dispatched: only a blank line dispatches.
 */
export class SSEParser {
    buffer = "";
    afterCR = false;
    id;
    event = "";
    data = [];
    /** Feed text; returns the events it completed. */
    push(text) {
        if (text === "")
            return []; // a decoder holding half a character: nothing to see yet
        // A chunk that ended with CR ended a line; an LF starting this one is that CRLF's second half.
        if (this.afterCR && text.startsWith("\n"))
            text = text.slice(1);
        this.afterCR = false;
        this.buffer += text;
        const out = [];
        for (;;) {
            const m = /\r\n|\r|\n/.exec(this.buffer);
            if (!m)
                break;
            const line = this.buffer.slice(0, m.index);
            this.buffer = this.buffer.slice(m.index + m[0].length);
            if (m[0] === "\r" && this.buffer === "")
                this.afterCR = true;
            const ev = this.line(line);
            if (ev)
                out.push(ev);
        }
        return out;
    }
    line(line) {
        if (line === "") {
            const ev = this.data.length ? { id: this.id, event: this.event || "message", data: this.data.join("\n") } : undefined;
            this.id = undefined;
            this.event = "";
            this.data = [];
            return ev;
        }
        if (line.startsWith(":"))
            return undefined; // a comment: a heartbeat, or a note about dropped records
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" "))
            value = value.slice(1);
        if (name === "id") {
            if (!value.includes("\0"))
                this.id = value;
        }
        else if (name === "event") {
            this.event = value;
        }
        else if (name === "data") {
            this.data.push(value);
        }
        // "retry" and unknown fields are ignored.
        return undefined;
    }
}
