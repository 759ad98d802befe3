"""A synthetic corpus for the learning filter: spam and ham drawn from overlapping
vocabularies (so the task is not trivial), with a seed for reproducible figures."""

from __future__ import annotations

import random

COMMON = [
    'the', 'and', 'for', 'you', 'with', 'this', 'that', 'have', 'from', 'your', 'will',
    'about', 'just', 'more', 'time', 'today', 'please', 'thanks', 'here', 'there', 'would',
    'could', 'also', 'only', 'some', 'what', 'when',
]
SPAM = [
    'free', 'offer', 'winner', 'cash', 'prize', 'viagra', 'pills', 'discount', 'cheap', 'loan',
    'credit', 'casino', 'bonus', 'click', 'unsubscribe', 'limited', 'urgent', 'guaranteed',
    'investment', 'crypto', 'bitcoin', 'claim', 'exclusive', 'deal', 'million', 'refund',
    'pharmacy', 'luxury', 'replica', 'weight', 'loss',
]
HAM = [
    'meeting', 'project', 'report', 'agenda', 'review', 'schedule', 'invoice', 'team',
    'budget', 'draft', 'minutes', 'lunch', 'family', 'weekend', 'kids', 'holiday', 'dinner',
    'photos', 'release', 'build', 'patch', 'deploy', 'question', 'notes', 'document', 'slides',
    'conference', 'travel',
]
SPAM_DOMAINS = ["promo-mail.biz", "best-deals.top", "win-now.click", "cheap-rx.shop"]
HAM_DOMAINS = ["example.org", "university.edu", "partner.example", "family.example"]


def message(rng: random.Random, spam: bool, n: int) -> bytes:
    own, other = (SPAM, HAM) if spam else (HAM, SPAM)
    # one message in ten comes from the other class's domains (forwarded, compromised)
    domains = SPAM_DOMAINS if spam != (rng.random() < 0.1) else HAM_DOMAINS
    words = []
    for _ in range(rng.randint(15, 80)):
        r = rng.random()
        # 25 % own class, 60 % common, 15 % the other class: overlap on purpose
        pool = own if r < 0.25 else COMMON if r < 0.85 else other
        words.append(rng.choice(pool))
    subject = " ".join(rng.choice(own if rng.random() < 0.6 else COMMON) for _ in range(4))
    sender = f"{rng.choice(['info', 'news', 'john', 'mary', 'team'])}@{rng.choice(domains)}"
    body = " ".join(words)
    if spam and rng.random() < 0.5:
        body += f"\r\nhttps://{rng.choice(domains)}/offer?id={n}"
    return (f"From: <{sender}>\r\nTo: <bob@example.test>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{n}.{spam}@gen>\r\n\r\n{body}\r\n").encode()


def corpus(seed: int, count: int) -> list[tuple[bytes, bool]]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        spam = n % 2 == 0
        out.append((message(rng, spam, n), spam))
    return out
