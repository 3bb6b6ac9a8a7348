# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mailtool_global_optspecs
    string join \n data= h/help V/version
end

function __fish_mailtool_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mailtool_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mailtool_using_subcommand
    set -l cmd (__fish_mailtool_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mailtool -n "__fish_mailtool_needs_command" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_needs_command" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_needs_command" -s V -l version -d 'Print version'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "user" -d 'Add, remove, list users and set passwords'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "mailbox" -d 'Manage mailboxes (`mailbox clear ADDR` empties one)'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "export" -d 'Write messages as mboxrd (stdout or -o FILE) or Maildir (-o DIR)'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "backup" -d 'A consistent full copy of the store (taken while maild runs) into a new DIR'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "restore" -d 'Build a working store in --data (empty) from a backup DIR'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "verify" -d 'Check the store: sequence, records, mailboxes, range files. Non-zero on a fault'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "stats" -d 'Print `key: value` lines about the store'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "queue" -d 'The outbound queue (`queue flush` retries everything now, `queue delete N` removes one)'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "peers" -d 'Known peers: static, discovered, and remembered domains (`peers forget DOMAIN`)'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "bench" -d 'Load generators'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "stress" -d 'Random valid transactions and every SMTP error case, each reply checked'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "send" -d 'Send one message over SMTP (body from stdin)'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "fetch" -d 'Fetch a user\'s mail over POP3 into an mbox file'
complete -c mailtool -n "__fish_mailtool_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -f -a "add" -d 'Create a user (creates the store if DIR is empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -f -a "del" -d 'Remove a user and the mail in their mailbox (a new account with the same address starts empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -f -a "list" -d 'List users'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -f -a "passwd" -d 'Set a user\'s password'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and not __fish_seen_subcommand_from add del list passwd help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from add" -l password-file -d 'Read the password from FILE (one trailing newline stripped)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from add" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from add" -l any-domain -d 'Add the user even though maild does not serve the address\'s domain'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from add" -l password-stdin -d 'Read the password from stdin (one trailing newline stripped)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from del" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from del" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from list" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from passwd" -l password-file -d 'Read the password from FILE (one trailing newline stripped)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from passwd" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from passwd" -l password-stdin -d 'Read the password from stdin (one trailing newline stripped)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from passwd" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create a user (creates the store if DIR is empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "del" -d 'Remove a user and the mail in their mailbox (a new account with the same address starts empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "list" -d 'List users'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "passwd" -d 'Set a user\'s password'
complete -c mailtool -n "__fish_mailtool_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and not __fish_seen_subcommand_from clear help" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and not __fish_seen_subcommand_from clear help" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and not __fish_seen_subcommand_from clear help" -f -a "clear" -d 'Remove every message from a user\'s mailbox (the user stays)'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and not __fish_seen_subcommand_from clear help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and __fish_seen_subcommand_from clear" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and __fish_seen_subcommand_from clear" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and __fish_seen_subcommand_from help" -f -a "clear" -d 'Remove every message from a user\'s mailbox (the user stays)'
complete -c mailtool -n "__fish_mailtool_using_subcommand mailbox; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -l user -d 'Only this user\'s mailbox' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -l from -d 'First message number (inclusive)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -l to -d 'Last message number (inclusive)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -l format -r -f -a "mbox\t''
maildir\t''"
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -s o -d 'Output file (mbox; default stdout) or new directory (maildir)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand export" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand backup" -s o -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand backup" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand backup" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand restore" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand restore" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand verify" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand verify" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand stats" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand stats" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and not __fish_seen_subcommand_from flush delete help" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and not __fish_seen_subcommand_from flush delete help" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and not __fish_seen_subcommand_from flush delete help" -f -a "flush" -d 'Retry every queued message now'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and not __fish_seen_subcommand_from flush delete help" -f -a "delete" -d 'Remove message N from the queue and bounce it to its sender'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and not __fish_seen_subcommand_from flush delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from flush" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from flush" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from delete" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from delete" -l silent -d 'No bounce'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "flush" -d 'Retry every queued message now'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Remove message N from the queue and bounce it to its sender'
complete -c mailtool -n "__fish_mailtool_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and not __fish_seen_subcommand_from forget help" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and not __fish_seen_subcommand_from forget help" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and not __fish_seen_subcommand_from forget help" -f -a "forget" -d 'Forget a domain a discovered peer owned (its mail no longer waits for the peer)'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and not __fish_seen_subcommand_from forget help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and __fish_seen_subcommand_from forget" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and __fish_seen_subcommand_from forget" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and __fish_seen_subcommand_from help" -f -a "forget" -d 'Forget a domain a discovered peer owned (its mail no longer waits for the peer)'
complete -c mailtool -n "__fish_mailtool_using_subcommand peers; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and not __fish_seen_subcommand_from smtp pop3 help" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and not __fish_seen_subcommand_from smtp pop3 help" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and not __fish_seen_subcommand_from smtp pop3 help" -f -a "smtp" -d 'Send messages over SMTP and report msgs/s and ack latency'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and not __fish_seen_subcommand_from smtp pop3 help" -f -a "pop3" -d 'Log in over POP3 and RETR every message; report msgs/s'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and not __fish_seen_subcommand_from smtp pop3 help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l smtp -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l connections -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l messages -d 'Messages in all, spread over the connections' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l size -d 'Size of each message in bytes' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l rcpt -d 'Recipient (must be a user of the server)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l from -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l rate -d 'Offered load in messages per second over all connections, each message sent at its scheduled time (an open loop). Without it every connection sends its next message as soon as the last is answered, so latency is mostly queueing: connections / rate' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -l starttls -d 'STARTTLS on every connection. The server\'s certificate is not checked: this measures what encryption costs and protects nothing'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from smtp" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -l pop3 -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -l user -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -l password -d 'The password (a benchmark account\'s; default "bench")' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -l pipeline -d 'RETR commands sent before reading their replies (1: one round trip each)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from pop3" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "smtp" -d 'Send messages over SMTP and report msgs/s and ack latency'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "pop3" -d 'Log in over POP3 and RETR every message; report msgs/s'
complete -c mailtool -n "__fish_mailtool_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l smtp -d 'The SMTP server to test' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l rcpt -d 'A recipient that exists on the server (repeatable, at least one)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l connections -d 'Concurrent connections, one thread each' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l duration -d 'How long to run: `500ms`, `10s`, `2m`, `1h` or plain seconds' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l seed -d 'PRNG seed; the default comes from the clock. Printed first, to replay a run' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand stress" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l smtp -d 'The SMTP server' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l from -d 'The envelope sender (MAIL FROM); an empty string is the null sender `<>`' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l to -d 'A recipient (repeatable)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l subject -d 'Write From:, To:, Subject: and Date: headers before the body from stdin; without it, stdin is the whole message, headers included' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l helo -d 'The name given in EHLO' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l tls-ca -d 'Check the server\'s certificate against the CA certificates in this PEM file, for the host named in --smtp. Without it the certificate is not checked' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l user -d 'Log in as this user with AUTH PLAIN (RFC 4954), as a submission port requires. The password is prompted for on the terminal, read from --password-file, or with --password-stdin taken from the first line of stdin (the message follows it)' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l password-file -d 'Read the password from FILE (one trailing newline stripped)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l starttls -d 'Encrypt with STARTTLS (RFC 3207) before anything else; fails if the server does not offer it'
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -l password-stdin -d 'Read the password from stdin (one trailing newline stripped)'
complete -c mailtool -n "__fish_mailtool_using_subcommand send" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l pop3 -d 'The POP3 server' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l user -d 'The user\'s full address, as given to `mailtool user add`' -r
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -s o -l output -d 'The mbox file to append to (created if missing)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l password-file -d 'Read the password from FILE (one trailing newline stripped)' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l data -d 'The maild data directory' -r -F
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l delete -d 'Delete each fetched message on the server (applied at QUIT, once the file is synced)'
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -l password-stdin -d 'Read the password from stdin (one trailing newline stripped)'
complete -c mailtool -n "__fish_mailtool_using_subcommand fetch" -s h -l help -d 'Print help'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "user" -d 'Add, remove, list users and set passwords'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "mailbox" -d 'Manage mailboxes (`mailbox clear ADDR` empties one)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "export" -d 'Write messages as mboxrd (stdout or -o FILE) or Maildir (-o DIR)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "backup" -d 'A consistent full copy of the store (taken while maild runs) into a new DIR'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "restore" -d 'Build a working store in --data (empty) from a backup DIR'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "verify" -d 'Check the store: sequence, records, mailboxes, range files. Non-zero on a fault'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "stats" -d 'Print `key: value` lines about the store'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "queue" -d 'The outbound queue (`queue flush` retries everything now, `queue delete N` removes one)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "peers" -d 'Known peers: static, discovered, and remembered domains (`peers forget DOMAIN`)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "bench" -d 'Load generators'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "stress" -d 'Random valid transactions and every SMTP error case, each reply checked'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "send" -d 'Send one message over SMTP (body from stdin)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "fetch" -d 'Fetch a user\'s mail over POP3 into an mbox file'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and not __fish_seen_subcommand_from user mailbox export backup restore verify stats queue peers bench stress send fetch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "add" -d 'Create a user (creates the store if DIR is empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "del" -d 'Remove a user and the mail in their mailbox (a new account with the same address starts empty)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "list" -d 'List users'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "passwd" -d 'Set a user\'s password'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from mailbox" -f -a "clear" -d 'Remove every message from a user\'s mailbox (the user stays)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "flush" -d 'Retry every queued message now'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "delete" -d 'Remove message N from the queue and bounce it to its sender'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from peers" -f -a "forget" -d 'Forget a domain a discovered peer owned (its mail no longer waits for the peer)'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "smtp" -d 'Send messages over SMTP and report msgs/s and ack latency'
complete -c mailtool -n "__fish_mailtool_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "pop3" -d 'Log in over POP3 and RETR every message; report msgs/s'
