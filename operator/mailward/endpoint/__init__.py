"""The MTA-STS policy endpoint (`mailward serve-policies`): one HTTPS server for every MailDomain.

`catalog` decides what is served from the MailDomains (pure), `certificates` picks the server
certificate by SNI, `server` is the aiohttp server, `kube` keeps both up to date from the API
server through watches, so a changed spec is served within a second or two, without a restart.
"""
