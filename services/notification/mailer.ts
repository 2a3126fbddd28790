/**
 * E-mail transport: nodemailer over SMTP to `SMTP_URL` (smtp:// or smtps://, credentials in
 * the URL), or none: without SMTP_URL e-mails are kept in the notification database only
 * (status `stored`, readable with `notification.outbox`), as docs/configuration.md's
 * table says. That holds in cluster mode too: SMTP_URL is optional there, and a cluster
 * without it keeps its e-mails in MariaDB instead of failing to start.
 */
import nodemailer from "nodemailer";
import type { EmailContent } from "./notification.domain";

export interface OutgoingMail extends EmailContent {
  to: string;
  /** Stable per notification (`<notification-<id>@domain>`), the same on every resend. */
  messageId: string;
  notificationId: string;
}

export interface Mailer {
  kind: "smtp" | "store";
  /** Resolves once the SMTP server accepted the message; rejects otherwise. */
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
}

/** SMTP waits, kept well under the sender's claim lease (notification.service.ts). */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000, dnsTimeout: 10_000 };

export function createMailer(mail: { smtpUrl?: string; from: string }): Mailer {
  if (!mail.smtpUrl) return { kind: "store", async send() {}, close() {} };
  // Not pooled: one connection per message, so a dead server costs one failed attempt and
  // nothing is left half-open between passes.
  const transport = nodemailer.createTransport({ url: mail.smtpUrl, ...SMTP_TIMEOUTS }, { from: mail.from });
  return {
    kind: "smtp",
    async send(m) {
      await transport.sendMail({
        to: m.to,
        subject: m.subject,
        text: m.text,
        html: m.html,
        messageId: m.messageId,
        headers: { "X-Meridian-Notification": m.notificationId },
      });
    },
    close() {
      transport.close();
    },
  };
}

/**
 * A rejection that retrying the same message would get again: the server refused the
 * recipient or the message for good (5xx on RCPT/DATA). Credentials or TLS trouble (also
 * 5xx, on AUTH) and connection failures are retried, since a fixed configuration or a
 * server back up delivers them.
 */
export function isPermanentRejection(err: unknown): boolean {
  const e = err as { permanent?: boolean; command?: string; recipient?: string; rejected?: string[] } | null;
  if (!e || e.permanent !== true) return false;
  return Boolean(e.recipient || e.rejected?.length || /^(RCPT|DATA|MAIL)/i.test(e.command ?? ""));
}
