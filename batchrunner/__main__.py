from batchrunner.launch import entry

entry()
