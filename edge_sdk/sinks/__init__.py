"""Where results go: signals to the line, archives, callbacks. Each sink runs behind its
own queue and thread (`SinkRunner`), so a slow or dead one never stalls inspection.
"""
