"""Where recordings come from besides local files: HTTP(S) and SFTP recording servers."""
