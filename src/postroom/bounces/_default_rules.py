"""The built-in qualification rules, as plain data (see `rules.py` for the order's rationale).

Each entry: (id, failure type, reason, description, text pattern or None, status prefix or
None). Patterns are case-insensitive regular expressions over the reply or diagnostic text.
They quote the wording of MTAs and providers (Postfix, Exim, Sendmail, qmail, Exchange/Office
365, Gmail, Yahoo, Outlook.com, Courier, Lotus/Domino, ...) — one phrase per way of saying a
thing, never one text of one bounce.
"""

from __future__ import annotations

from postroom.domain.outcomes import FailureReason, FailureType

__all__ = ["DEFAULT_RULES"]

H, S, IGN, U = FailureType.HARD, FailureType.SOFT, FailureType.IGNORED, FailureType.UNDEFINED
R = FailureReason

Spec = tuple[str, FailureType, FailureReason, str, str | None, str | None]

# An address (or a quoted name) between the subject and the verb: "recipient <a@b> is ...".
_ADDR_SLOT = r"(?: <?[^\s<>@]+@[^\s<>]+>?| \"[^\"]{0,80}\")?"
_USER_UNKNOWN = (
    # the meaning, not one wording: a word of non-existence or invalidity, then (at most two
    # words on) the noun for a recipient — "invalid final delivery userid", "no valid
    # recipients", "unknown local user"
    r"\b(?:invalid|unknown|no valid|not a valid|non-?existent|no such)\s+(?:[\w-]+\s+){0,2}?"
    r"(?:user(?:id|name)?s?|recipients?|mailbox(?:es)?|addressee)\b"
    r"|user(?:name)? (?:unknown|not found|does ?n[o']t exist|not exist|is unknown)"
    r"|unknown (?:user|recipient|local[- ]?part|mailbox|alias|account|e-?mail)"
    r"|no such (?:user|mailbox|recipient|account|address|local user|person)"
    rf"|(?:recipient|mailbox|address|account|addressee|alias)(?: address)?{_ADDR_SLOT}(?: is)?"
    r" (?:unknown|not found|does ?n[o']t exist|not exist|not valid|invalid|unavailable"
    r" \(#5\.1\.1\))"
    r"|invalid (?:recipient|mailbox|user|final delivery userid|e-?mail address)"
    r"|not (?:a )?(?:valid|known) (?:user|recipient|mailbox|address)"
    r"|(?:recipient|address) (?:rejected|refused): (?:undeliverable address|unknown|user)"
    r"|unknown or illegal (?:alias|user)|illegal alias|bad recipient"
    r"|no mailbox (?:here|by that name)|mailbox (?:name )?not (?:found|allowed)"
    r"|not listed in (?:domino directory|public name & address book)"
    r"|recipient name is not recognized|recipnotfound|recipient not found"
    r"|(?:email )?(?:account|address) that you tried to reach does not exist"
    r"|e-?mail address (?:wasn|was not|couldn)'?t? (?:be )?found|doesn'?t have an? .{0,40}"
    r" account|no valid recipients|addressee unknown|does not exist (?:here|on this)"
)
# The failure came at the end of DATA: the recipient was accepted at RCPT TO, so a "user
# unknown" now is a content or sender filter hiding behind that wording (Japanese carriers,
# m-FILTER and others do this). Postfix, Exim, Sendmail, qmail, DragonFly and m-FILTER cues.
_AT_DATA = (
    r"in reply to end of data|after (?:end of )?data|>>> data|final data|smtp command\W+data"
    r"|\(data\)|failed after i sent the message|data command"
)
# The recipient itself was refused at RCPT TO: then "user unknown" means what it says.
_AT_RCPT = (
    r"in reply to rcpt to|after rcpt to|>>> rcpt to|did not like our rcpt to|\[rcpt_to\]"
    r"|smtp:rcpt|does not like recipient"
)

DEFAULT_RULES: tuple[Spec, ...] = (
    # 1. Feedback reports (their diagnostic is "feedback-type: <type>") and success notices.
    ("feedback-not-complaint", IGN, R.ERROR_IGNORED,
     "an authentication-failure or not-spam report is not the recipient's complaint",
     r"^feedback-type:\s*(?:auth-failure|not-spam|dmarc)", None),
    ("feedback-complaint", H, R.DENYLISTED,
     "spam complaint (abuse, fraud, virus, unsubscribe request): denylist the address",
     r"^feedback-type:", None),
    ("delivered", IGN, R.ERROR_IGNORED, "a success status: delivered, relayed, expanded", None,
     "2."),
    # 2. Specific wording.
    ("mailbox-full", S, R.MAILBOX_FULL, "the mailbox is over its quota",
     r"mail ?box (?:is )?(?:full|over ?quota|size limit|exceeded)|over (?:the |its |their )?"
     r"(?:quota|storage)|overquota|quota limit|quota"
     r" (?:exceeded|exceed|full|violation)|exceed(?:s|ed)? (?:the |his |her |their )?(?:storage"
     r"|quota|mailbox|disk)|insufficient (?:disk space|storage)|(?:storage|disk) quota|mail ?box"
     r" would exceed|(?:account|mailfolder|inbox|mailbox) is full|full mailbox|not enough"
     r" (?:storage|space)|mailbox has exceeded|user is over|too much mail|maildir over", None),
    ("account-disabled", S, R.ACCOUNT_DISABLED,
     "the account exists but is disabled, suspended, inactive or expired",
     rf"(?:account|mailbox|user|recipient(?: address)?|address){_ADDR_SLOT}(?: has been| is"
     r"| was)? (?:disabled|suspended|deactivated|inactive|locked|frozen|closed|expired"
     r"|not active)"
     r"|disabled (?:recipient|account|mailbox|user)|inactive (?:account|user|mailbox|recipient)"
     r"|account (?:disabled|suspended)|is no longer active|account (?:is |has been )?blocked"
     r"|(?:account|address) that you tried to reach is (?:disabled|inactive|suspended)",
     None),
    ("has-moved", H, R.USER_UNKNOWN, "the address has moved; a new one was given",
     r"(?:has|have) (?:been )?moved|address (?:has )?changed|no longer (?:at|with) this"
     r"|new address is", None),
    ("mailer-error", S, R.UNREACHABLE,
     "the receiving host's local delivery agent failed (procmail, pipe, maildrop)",
     r"procmail|maildrop|couldn'?t create|pipe to|command (?:failed|died)|exit (?:code|status)"
     r"|local delivery failed|mailer error", None),
    ("sender-refused", S, R.REFUSED,
     "the sender (MAIL FROM) was refused: nothing is wrong with the recipient",
     r"domain of sender|sender (?:address|domain)(?: \S+)? (?:rejected|does not exist|unknown"
     r"|invalid|is invalid|not allowed|not accepted)|in reply to mail from|after mail from"
     r"|did not like our mail from|>>> mail from|sender was rejected", None),
    ("user-unknown-status", H, R.USER_UNKNOWN,
     "\"user unknown\" confirmed by x.1.1 (bad destination mailbox)", _USER_UNKNOWN, "x.1.1"),
    ("user-unknown-provider", H, R.USER_UNKNOWN,
     "the big providers' own wording for a missing account (Yahoo, Gmail, Exchange, Domino)",
     r"doesn'?t have an? [\w.-]+ account|account that you tried to reach does not exist"
     r"|recipnotfound|recipient not found by smtp address lookup"
     r"|not listed in (?:domino directory|public name & address book)"
     r"|e-?mail address (?:you entered )?(?:wasn|was not|couldn)'?t? (?:be )?found"
     r"|recipient (?:e-?mail )?address is possibly incorrect", None),
    ("user-unknown-after-data", S, R.REFUSED,
     "\"user unknown\" at the end of DATA: a filter's answer, not a missing mailbox",
     rf"(?s)^(?=.*?(?:{_AT_DATA}))(?=.*?(?:{_USER_UNKNOWN}))", None),
    ("user-unknown-policy-status", S, R.REFUSED,
     "\"user unknown\" under a policy status (x.7.x), not at RCPT TO: a filter's answer",
     rf"(?s)^(?!.*?(?:{_AT_RCPT}))(?=.*?(?:{_USER_UNKNOWN}))", "x.7."),
    ("user-unknown-filtered-status", S, R.REFUSED,
     "\"user unknown\" under x.2.0 (mailbox status, other), not at RCPT TO: a filter's answer",
     rf"(?s)^(?!.*?(?:{_AT_RCPT}))(?=.*?(?:{_USER_UNKNOWN}))", "x.2.0"),
    ("user-unknown", H, R.USER_UNKNOWN, "the mailbox does not exist", _USER_UNKNOWN, None),
    ("outlook-mailbox-unavailable", H, R.USER_UNKNOWN,
     "Outlook.com/Hotmail answer 5.5.0 \"mailbox unavailable\" for a mailbox that does not exist",
     r"mailbox unavailable", "x.5.0"),
    ("office365-directory", H, R.USER_UNKNOWN,
     "Exchange Online directory-based edge blocking: the recipient is not in the directory",
     r"recipient address rejected: access denied", "x.4.1"),
    ("host-unknown", S, R.INVALID_DOMAIN, "the recipient's domain does not exist or has no MX",
     r"host (?:or domain name )?(?:unknown|not found)|unknown host|domain (?:name )?(?:not"
     r" found|does ?n[o']t exist|unknown|is invalid|not exist)|no such domain|unrouteable"
     r"|unroutable|no (?:mx|mail exchanger|mail server)|mx (?:record|lookup)|null mx"
     r"|non-?existent (?:host|domain)"
     r"|does not accept mail|accepts no mail|domain (?:is )?not reachable|illegal (?:host|domain)"
     r"|couldn'?t find (?:any host|a mail exchanger)|name service error|dns error|bad"
     r" destination (?:system|mailbox) address|indicated no smtp service|invalid domain|domain"
     r" (?:is )?not (?:configured|valid|available)|(?:host|domain) name lookup failed"
     r"|(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,}\.? does not exist"
     # the resolver's own words for NXDOMAIN (getaddrinfo's EAI_NONAME, DNS rcode names)
     r"|unable to look up host|name or service not known|\bnxdomain\b", None),
    ("greylisted", S, R.REFUSED,
     "greylisting: the receiver defers a first attempt by policy and waits for a retry",
     r"gr[ae]y-?list", None),
    ("no-relaying", S, R.REFUSED, "the server refused to relay",
     r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed)|prohibited)|not permitted"
     r" to relay|unable to relay|(?:we do not|cannot|can'?t|will not) relay|no relaying"
     r"|relay not permitted|open relay|rcpthosts", None),
    ("authentication", S, R.REFUSED, "SPF, DKIM or DMARC checks failed",
     r"\bspf\b|\bdkim\b|\bdmarc\b|authentication (?:checks? )?fail|unauthenticated"
     r"|sender authentication|not authenticated|sender policy framework", None),
    ("reverse-dns", S, R.REFUSED, "the sending host has no reverse DNS (PTR)",
     r"reverse dns|\bptr\b|\brdns\b|reverse (?:lookup|address|hostname)|no reverse"
     r"|hostname lookup", None),
    ("rate-limit", S, R.REFUSED, "too much mail too fast from the sender",
     r"rate limit|too many (?:messages|mails|e-?mails|recipients|sessions)|throttl"
     r"|exceeded (?:the )?(?:rate|sending|message|daily|hourly) limit|unexpected volume"
     r"|temporarily deferred|try again later.{0,40}(?:volume|rate)|sending limit"
     r"|frequency limit", None),
    ("blocklisted", S, R.REFUSED,
     "the sending IP or domain is on a blocklist or has a poor reputation",
     r"black ?list|block ?list|deny ?list|\brbl\b|dnsbl|spamhaus|spamcop|sorbs|abuseat|barracuda"
     r"|uribl|surbl|listed (?:in|on|at|by)|poor reputation|bad reputation|reputation"
     r"|banned|blocked|unwanted messages|complaints", None),
    ("spam", S, R.REFUSED, "the message was classified as spam or bulk",
     r"spam|junk|\bbulk\b|unsolicited|\buce\b|suspicious|phish", None),
    ("virus", S, R.REFUSED, "the message carried a virus or malware",
     r"virus|malware|infected|trojan", None),
    ("security", S, R.REFUSED, "TLS or authorization required by the receiver",
     r"not authori[sz]ed|authori[sz]ation required|authentication required|tls required"
     r"|encryption required|must use (?:tls|starttls)|senders not allowed"
     r"|please use the smtp server|use your isp|submission", None),
    ("message-too-big", S, R.REFUSED, "the message exceeds the receiver's size limit",
     r"message (?:size|is too (?:big|large))|too (?:big|large)|size limit|exceeds? (?:the )?"
     r"(?:maximum|max)|message length exceeds", None),
    ("content", S, R.REFUSED, "the content, headers or format were refused",
     r"content (?:rejected|refused|filter|policy|not accepted|error)|message content"
     r"|header error|invalid header|media error|mime (?:error|format|structure)|line too long"
     r"|not (?:compliant|conform)|rfc ?(?:2822|5322|822)|malformed|syntax error"
     r"|bare lf|8-?bit", None),
    ("expired", S, R.UNREACHABLE, "delivery was retried until the message expired",
     r"expired|retry timeout|too long in (?:the )?queue|(?:in|on) the queue too long"
     r"|giving up|give up|gave up|could not (?:be )?deliver(?:ed)? (?:for|within|in)"
     r"|not delivered within|multiple retries|retry time|maximum (?:time|retries)|timed out"
     r" in queue", None),
    ("network", S, R.UNREACHABLE, "the receiving server could not be reached",
     r"connection (?:timed out|refused|reset|closed|lost|dropped)|timed out|time-?out"
     r"|no route to host|network (?:is )?unreachable|(?:host|server) (?:is )?(?:not"
     r" reachable|unreachable|not responding)|could not connect|unable to connect|establish"
     r" (?:an )?smtp connection|lost connection|socket error|requests to connect|connect(?:ion)?"
     r" failed|mail loop|hop count|too many hops|loop(?:s|ing)? (?:back|detected)"
     r"|temporary (?:dns|lookup) failure", None),
    ("system-error", S, R.UNREACHABLE, "the receiving system failed (temporary fault)",
     r"system error|internal (?:server |system )?error|local error|server error"
     r"|mailer error"
     r"|resources? temporarily|temporar(?:y|ily) (?:unavailable|failure|error|problem)"
     r"|service (?:is )?(?:currently )?(?:not available|unavailable|temporarily)"
     r"|ldap|configuration error"
     r"|too many (?:connections|simultaneous|concurrent)|insufficient system|system (?:is )?"
     r"(?:busy|full|overloaded)|protocol error|pipe to|exit code|command (?:failed|died)"
     r"|failed to (?:read|write|open)", None),
    ("policy", S, R.REFUSED, "refused by the receiver's policy or filters",
     r"polic(?:y|ies)|prohibited|administrative|filter|not accepted|access denied"
     r"|denied|refused|not allowed|not permitted|rejected for|not a member|not allowed to post"
     r"|sender (?:address )?(?:rejected|verify|unknown|domain)|mail from|preferences"
     r"|groups\.google\.com", None),
    # 3. Enhanced status codes (RFC 3463), when the wording said nothing specific.
    ("status-moved", H, R.USER_UNKNOWN, "5.1.6: mailbox has moved", None, "x.1.6"),
    ("status-user-unknown", H, R.USER_UNKNOWN, "x.1.1: bad destination mailbox",
     None, "x.1.1"),
    ("status-address", H, R.USER_UNKNOWN, "x.1.0: other address status (bad recipient)",
     None, "x.1.0"),
    ("status-bad-address", H, R.USER_UNKNOWN, "x.1.3: bad destination mailbox address syntax",
     None, "x.1.3"),
    ("status-host-unknown", S, R.INVALID_DOMAIN, "x.1.2: bad destination system address",
     None, "x.1.2"),
    ("status-null-mx", S, R.INVALID_DOMAIN, "x.1.10: the domain publishes a null MX (RFC 7505)",
     None, "x.1.10"),
    ("status-sender", S, R.REFUSED, "x.1.7: bad sender's mailbox address", None,
     "x.1.7"),
    ("status-sender-domain", S, R.REFUSED, "x.1.8: bad sender's system address", None,
     "x.1.8"),
    ("status-ambiguous", S, R.REFUSED,
     "x.1.4: destination mailbox address ambiguous (several mailboxes match)", None, "x.1.4"),
    ("status-disabled", S, R.ACCOUNT_DISABLED, "x.2.1: mailbox disabled", None, "x.2.1"),
    ("status-mailbox-full", S, R.MAILBOX_FULL, "x.2.2: mailbox full", None, "x.2.2"),
    ("status-too-big", S, R.REFUSED, "x.2.3: message length exceeds the mailbox limit", None,
     "x.2.3"),
    ("status-list-expansion", S, R.UNREACHABLE, "x.2.4: mailing list expansion problem",
     None, "x.2.4"),
    ("status-system-too-big", S, R.REFUSED, "x.3.4: message too big for the system", None,
     "x.3.4"),
    ("status-system", S, R.UNREACHABLE, "x.3.x: mail system fault", None, "x.3."),
    ("status-expired", S, R.UNREACHABLE, "x.4.7: delivery time expired", None, "x.4.7"),
    ("status-no-route", S, R.INVALID_DOMAIN,
     "5.4.4: unable to route, permanently (the domain has no address or MX)", None, "5.4.4"),
    ("status-network", S, R.UNREACHABLE, "x.4.x: network or routing fault", None, "x.4."),
    ("status-protocol", S, R.REFUSED, "x.5.x: protocol or syntax refusal", None, "x.5."),
    ("status-content", S, R.REFUSED, "x.6.x: content or media refused", None, "x.6."),
    ("status-account-disabled", S, R.ACCOUNT_DISABLED,
     "x.7.13: user account disabled (IANA registry, RFC 3463 extension)", None, "x.7.13"),
    ("status-owner-changed", H, R.USER_UNKNOWN,
     "x.7.17: mailbox owner has changed (RFC 7293): the address is someone else's now", None,
     "x.7.17"),
    ("status-domain-owner-changed", S, R.INVALID_DOMAIN,
     "x.7.18: domain owner has changed (RFC 7293)", None, "x.7.18"),
    ("status-security", S, R.REFUSED, "x.7.x: security or policy refusal", None, "x.7."),
    # 4. Weak wording: only when nothing more specific matched.
    ("mailbox-unavailable", S, R.REFUSED,
     "mailbox unavailable / rejected: the server refused without saying why",
     r"mailbox unavailable|rejected|not accepted", None),
    # 5. The class of a status that a report gave up on.
    ("status-temporary", S, R.UNREACHABLE, "4.x.x: a temporary failure that never resolved",
     None, "4."),
)
