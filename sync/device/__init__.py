"""What runs on the terminal and crosses the network: the push client, the pull API, the time and roster clients,
the ZKTeco port-4370 server, the ADMS client and the offline export.
"""
