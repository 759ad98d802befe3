require ["fileinto", "envelope", "body", "imap4flags", "regex", "subaddress", "relational", "comparator-i;ascii-numeric"];
# 50 rules of the kinds users write: lists, senders, subjects, envelope, size, body.
# Bench mail matches none of them, so every rule is evaluated and the message is kept.
if header :contains "List-Id" "<list0.lists.example.org>" { fileinto "Lists/list0"; stop; }
if header :contains "List-Id" "<list1.lists.example.org>" { fileinto "Lists/list1"; stop; }
if header :contains "List-Id" "<list2.lists.example.org>" { fileinto "Lists/list2"; stop; }
if header :contains "List-Id" "<list3.lists.example.org>" { fileinto "Lists/list3"; stop; }
if header :contains "List-Id" "<list4.lists.example.org>" { fileinto "Lists/list4"; stop; }
if header :contains "List-Id" "<list5.lists.example.org>" { fileinto "Lists/list5"; stop; }
if header :contains "List-Id" "<list6.lists.example.org>" { fileinto "Lists/list6"; stop; }
if header :contains "List-Id" "<list7.lists.example.org>" { fileinto "Lists/list7"; stop; }
if header :contains "List-Id" "<list8.lists.example.org>" { fileinto "Lists/list8"; stop; }
if header :contains "List-Id" "<list9.lists.example.org>" { fileinto "Lists/list9"; stop; }
if address :is "from" ["boss0@corp.example", "ceo0@corp.example"] { fileinto "Work/0"; stop; }
if address :is "from" ["boss1@corp.example", "ceo1@corp.example"] { fileinto "Work/1"; stop; }
if address :is "from" ["boss2@corp.example", "ceo2@corp.example"] { fileinto "Work/2"; stop; }
if address :is "from" ["boss3@corp.example", "ceo3@corp.example"] { fileinto "Work/3"; stop; }
if address :is "from" ["boss4@corp.example", "ceo4@corp.example"] { fileinto "Work/4"; stop; }
if address :is "from" ["boss5@corp.example", "ceo5@corp.example"] { fileinto "Work/5"; stop; }
if address :is "from" ["boss6@corp.example", "ceo6@corp.example"] { fileinto "Work/6"; stop; }
if address :is "from" ["boss7@corp.example", "ceo7@corp.example"] { fileinto "Work/7"; stop; }
if address :domain :is "from" "vendor0.example" { fileinto "Vendors/0"; stop; }
if address :domain :is "from" "vendor1.example" { fileinto "Vendors/1"; stop; }
if address :domain :is "from" "vendor2.example" { fileinto "Vendors/2"; stop; }
if address :domain :is "from" "vendor3.example" { fileinto "Vendors/3"; stop; }
if header :matches "subject" ["*invoice #0*", "*[ticket-0]*"] { fileinto "Tickets/0"; stop; }
if header :matches "subject" ["*invoice #1*", "*[ticket-1]*"] { fileinto "Tickets/1"; stop; }
if header :matches "subject" ["*invoice #2*", "*[ticket-2]*"] { fileinto "Tickets/2"; stop; }
if header :matches "subject" ["*invoice #3*", "*[ticket-3]*"] { fileinto "Tickets/3"; stop; }
if header :matches "subject" ["*invoice #4*", "*[ticket-4]*"] { fileinto "Tickets/4"; stop; }
if header :matches "subject" ["*invoice #5*", "*[ticket-5]*"] { fileinto "Tickets/5"; stop; }
if header :matches "subject" ["*invoice #6*", "*[ticket-6]*"] { fileinto "Tickets/6"; stop; }
if header :matches "subject" ["*invoice #7*", "*[ticket-7]*"] { fileinto "Tickets/7"; stop; }
if envelope :is "from" "alerts0@monitoring.example" { fileinto "Alerts/0"; stop; }
if envelope :is "from" "alerts1@monitoring.example" { fileinto "Alerts/1"; stop; }
if envelope :is "from" "alerts2@monitoring.example" { fileinto "Alerts/2"; stop; }
if envelope :is "from" "alerts3@monitoring.example" { fileinto "Alerts/3"; stop; }
if envelope :is "from" "alerts4@monitoring.example" { fileinto "Alerts/4"; stop; }
if envelope :detail "to" "tag0" { fileinto "Tagged/0"; stop; }
if envelope :detail "to" "tag1" { fileinto "Tagged/1"; stop; }
if envelope :detail "to" "tag2" { fileinto "Tagged/2"; stop; }
if header :regex "subject" "^\\[(jira|github)\\] .* #[0-9]+$" { fileinto "Dev"; stop; }
if exists "X-Spam-Flag" { fileinto "Junk"; stop; }
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "8" { fileinto "Junk"; stop; }
if size :over 20M { fileinto "Big"; stop; }
if address :localpart :is "to" "postmaster" { fileinto "Admin"; stop; }
if body :text :contains "unsubscribe-token-0" { fileinto "Newsletters/0"; stop; }
if body :text :contains "unsubscribe-token-1" { fileinto "Newsletters/1"; stop; }
if body :text :contains "unsubscribe-token-2" { fileinto "Newsletters/2"; stop; }
if body :text :contains "unsubscribe-token-3" { fileinto "Newsletters/3"; stop; }
if header :contains "subject" "meeting request" { fileinto "Calendar"; stop; }
if allof (header :contains "from" "noreply", header :contains "subject" "receipt") { fileinto "Receipts"; stop; }
if header :contains "subject" "urgent" { addflag "\\Flagged"; }
